#!/usr/bin/env bash
# GPU checks for issue 24, run on a CUDA machine from the repository root (or a copy of it):
#   bash benchmarks/gpu_infer.sh [OUTDIR]
# 1. installs the DICOM wheels carried in .whl/ (if any) into /tmp/site (the machine has torch, transformers);
# 2. runs the execution-path tests (CUDA ones included); 3. benchmarks medvit infer on CUDA vs HF bf16 autocast.
# Writes OUTDIR/{gpu_tests.log,infer_fastpaths_gpu.{md,json},bench.log,env.txt}.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/medvit_gpu}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export MEDVIT_COMPILE_CACHE=/tmp/medvit_compile
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__, torch.cuda.get_device_name(0))"; nproc; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# 2. tests: CUDA paths + the CPU paths (compile cache, int8) on this machine's CPU
timeout ${TEST_TIMEOUT:-150} python3 -m pytest -q -p no:cacheprovider tests/infer/test_fastpath.py ${TEST_K:+-k "$TEST_K"} 2>&1 | tail -40 > "$OUT/gpu_tests.log"
cat "$OUT/gpu_tests.log" | tail -8
# 3. benchmark (ViT-B/16 and ViT-S/16; 1024² phantoms replicated to keep the GPU busy past start-up)
timeout ${BENCH_TIMEOUT:-330} python3 benchmarks/infer_fastpaths.py --device cuda --n ${N:-160} --replicate ${REPLICATE:-4} \
  --batch 64 --paths ${PATHS:-auto,fp32,compile} --name infer_fastpaths_gpu --out "$OUT" > "$OUT/bench.log" 2>&1
echo "bench exit $?"
tail -30 "$OUT/bench.log"
