"""How `medvit infer` executes the model: precision choice, bf16 weights, Inductor compile, PT2E int8.

- :func:`resolve_precision` (:mod:`medvit.nn.precision`, shared with the viewer and the VLM CXR expert) —
  ``auto`` means bf16 where the hardware multiplies bf16 natively (CPU with
  AVX512-BF16 or AMX, or CUDA), fp32 elsewhere (on a CPU without them oneDNN emulates bf16 and is slower
  than fp32; measured in ``benchmarks/results/infer_fastpaths.md``).
- :func:`compile_cached` — Inductor (PyTorch's maintained fusion compiler) ahead of time, with weight
  freezing (constant folding, oneDNN weight prepacking, fused epilogues), packaged once per (model hash,
  input shape, dtype, precision, torch version, hardware): a second run of the same model loads the
  package and compiles nothing; a changed model never reuses another model's entry. (Inductor's own
  FX-graph cache cannot serve here: it bypasses frozen CPU graphs, whose prepacked oneDNN weights do not
  pickle.)
- :func:`openvino_cached` — the optional OpenVINO CPU backend (``--compile openvino``; fp32 or bf16), converted to
  IR once per the same kind of key and loaded afterwards; measured faster than the native bf16 path on this project's
  2-core AVX512-BF16 CPU (``benchmarks/results/infer_fastpaths_run3.md``).
- :func:`quantize_int8_pt2e` — static int8 post-training quantisation through the PT2E flow with the x86
  Inductor quantizer (``torchao.quantization.pt2e``; activations calibrated on real input batches, per-channel
  symmetric weights), lowered by Inductor to oneDNN int8 kernels (VNNI/AMX).

Numerical drift of each path against fp32 is bounded in ``tests/infer/test_fastpath.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

# the precision resolution is shared with the viewer and the VLM CXR expert (re-exported here)
from medvit.io.jsonfile import read_json
from medvit.nn.precision import (  # noqa: F401
    DEFAULT_PRECISION,
    PRECISIONS,
    cpu_has_native_bf16,
    resolve_precision,
)

logger = logging.getLogger(__name__)

COMPILE_MODES = ("none", "inductor", "openvino")


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a model's state dict (its identity for caching)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def default_cache_root() -> Path:
    """``$MEDVIT_COMPILE_CACHE`` or ``$XDG_CACHE_HOME/medvit/compile`` (``~/.cache/medvit/compile``)."""
    env = os.environ.get("MEDVIT_COMPILE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medvit" / "compile"


def entry_dir(key: str, cache_root: Path | None = None) -> tuple[Path, str | None]:
    """(folder to write the cache entry ``key`` into, None), or (a private temporary folder, why the cache is
    unusable) when the cache root (``cache_root`` or :func:`default_cache_root`) cannot hold it: a file, an
    unwritable or missing-and-uncreatable folder. The caller then compiles without caching (logged as a warning
    naming the path; the temporary folder is removed at exit), instead of failing the run."""
    import atexit
    import shutil
    import tempfile

    base = cache_root or default_cache_root()
    d = base / key
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".probe{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return d, None
    except OSError as e:
        var = "$MEDVIT_COMPILE_CACHE=" if cache_root is None and os.environ.get("MEDVIT_COMPILE_CACHE") else ""
        why = f"compile cache {var}{base} is not a writable folder ({e.strerror or e}: {e.filename or d})"
        tmp = Path(tempfile.mkdtemp(prefix="medvit-compile-"))
        atexit.register(shutil.rmtree, tmp, True)
        logger.warning("%s; compiling without caching (the next run compiles again). Point MEDVIT_COMPILE_CACHE at "
                       "a writable folder to keep compiled models.", why)
        return tmp, why


@dataclass
class CompileInfo:
    """What a compile did (goes into run.json): cache key and folder, whether the package was reused."""

    key: str
    cache_dir: str
    reused: bool
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "cache_dir": self.cache_dir, "reused": self.reused,
                "seconds": round(self.seconds, 3), **self.meta}


def cache_key(model_sha256: str, shape: Sequence[int], dtype: torch.dtype, precision: str, device: str) -> str:
    """Hex key of a compiled artefact: model hash, input shape and dtype, precision, torch version, device kind."""
    dev = torch.device(device)
    hw = torch.cuda.get_device_name(dev) if dev.type == "cuda" else torch.backends.cpu.get_cpu_capability()
    doc = {"model": model_sha256, "shape": list(shape), "dtype": str(dtype), "precision": precision,
           "torch": torch.__version__, "device": dev.type, "hardware": hw}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]


PACKAGE = "model.pt2"


def compile_cached(model: nn.Module | Callable[[], nn.Module], example: torch.Tensor, precision: str,
                   model_sha256: str | None = None, cache_root: Path | None = None,
                   record: Mapping[str, Any] | None = None) -> tuple[Any, CompileInfo]:
    """Compile ``model`` for inputs shaped like ``example`` (B, C, H, W) once; later runs load the result.

    ``model`` may be a zero-argument callable building the module (an int8 quantisation): it is called only when
    the package has to be compiled, so a run that loads the package skips building it (give ``model_sha256``).

    Ahead-of-time Inductor (``torch.export`` → ``torch._inductor.aoti_compile_and_package``) with
    ``freezing`` (weights become constants: folded, prepacked for oneDNN / fused epilogues). The package
    goes to ``cache_root/<key>/model.pt2`` (key: :func:`cache_key` of the model hash, shape, dtype,
    precision, torch version and hardware; written atomically); when it exists it is loaded and nothing is
    compiled. A model with other weights has another hash, hence another entry. The compiled callable
    accepts exactly ``example``'s shape: callers pad the last batch. ``record``: JSON-able facts about how the
    package was made (an int8 calibration), written beside it and returned in ``CompileInfo.meta`` by the runs that
    load it; a value may be a zero-argument callable giving the fact, called only when the package is compiled
    here (a run that loads the package reads the stored value and never computes it, e.g. a batch hash). A cache
    root that cannot be written (a file, no permission) is not an error: the model is compiled into a temporary
    folder, with a warning naming the path (:func:`entry_dir`; ``meta["cache_unusable"]``).
    Returns (callable, :class:`CompileInfo`).
    """
    import time

    import torch._inductor.config as inductor_config

    if model_sha256 is None and not isinstance(model, nn.Module):
        model = model()
    sha = model_sha256 or state_dict_sha256(model)  # type: ignore[arg-type]
    key = cache_key(sha, tuple(example.shape), example.dtype, precision, str(example.device))
    d = (cache_root or default_cache_root()) / key
    pkg = d / PACKAGE
    t0 = time.perf_counter()
    meta = {"model_sha256": sha, "shape": list(example.shape), "dtype": str(example.dtype),
            "backend": "AOTInductor (freezing)"}
    if pkg.is_file():
        try:
            fn = torch._inductor.aoti_load_package(str(pkg))
            if record:  # the stored values of the recorded keys (e.g. the int8 calibration) describe this package
                try:
                    stored = read_json(d / "medvit_compile.json")
                    meta.update({k: stored[k] for k in record if k in stored})
                except (OSError, ValueError):
                    logger.warning("%s: no readable medvit_compile.json beside the package", d)
            info = CompileInfo(key, str(d), True, time.perf_counter() - t0, meta)
            logger.info("loaded compiled model %s (%.1f s)", pkg, info.seconds)
            return fn, info
        except Exception as e:  # a package from another build of torch/the CPU: compile again
            logger.warning("compiled package %s not loadable (%s: %s); compiling again", pkg, type(e).__name__, e)
    if not isinstance(model, nn.Module):
        model = model()
    d, unusable = entry_dir(key, cache_root)
    pkg = d / PACKAGE
    meta.update({k: v() if callable(v) else v for k, v in (record or {}).items()})
    if unusable:
        meta["cache_unusable"] = unusable
    tmp = d / f".tmp{os.getpid()}.{PACKAGE}"  # torch wants the .pt2 suffix
    # no_grad, not inference_mode: under inference_mode the freezing pass cannot prepack int8 weights
    with torch.no_grad(), warnings.catch_warnings(), inductor_config.patch(freezing=True):
        warnings.simplefilter("ignore", UserWarning)
        exported = torch.export.export(model, (example,))
        torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp))
    os.replace(tmp, pkg)
    fn = torch._inductor.aoti_load_package(str(pkg))
    info = CompileInfo(key, str(d), False, time.perf_counter() - t0, meta)
    (d / "medvit_compile.json").write_text(json.dumps(info.to_dict(), indent=2))
    logger.info("compiled %s for %s in %.1f s into %s", type(model).__name__, tuple(example.shape),
                info.seconds, pkg)
    return fn, info


OPENVINO_IR = "model.xml"


class OpenVINOModel:
    """Callable (B, C, H, W) float32 tensor -> logits tensor (or a tuple of tensors for several outputs) running an
    OpenVINO compiled model on the CPU; outputs are copied out of the request's buffers."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.n_out = len(compiled.outputs)

    def __call__(self, x: torch.Tensor) -> Any:
        res = self.request.infer({0: x.detach().float().contiguous().cpu().numpy()})
        outs = tuple(torch.from_numpy(res[i].copy()) for i in range(self.n_out))
        return outs[0] if self.n_out == 1 else outs


def openvino_cached(model: nn.Module, example: torch.Tensor, precision: str, model_sha256: str | None = None,
                    cache_root: Path | None = None) -> tuple[OpenVINOModel, CompileInfo]:
    """``model`` (fp32) converted once to OpenVINO IR for inputs shaped like ``example`` (B, C, H, W) float32, then
    compiled for this CPU at ``precision`` ("fp32" or "bf16": OpenVINO's ``INFERENCE_PRECISION_HINT``).

    The IR goes to ``cache_root/<key>/model.xml`` (key: :func:`cache_key` of the model hash, shape, dtype,
    "openvino-<precision>", torch version and hardware) and OpenVINO's own compiled-blob cache to
    ``cache_root/<key>/blob``: a later run reads both and neither converts nor compiles again (``reused``).
    Threads: torch's intra-op thread count. Raises ``ImportError`` without ``openvino`` (``pip install
    'medvit[openvino]'``) and ``ValueError`` for another precision (int8 has one path: PT2E,
    :func:`quantize_int8_pt2e`).
    """
    import time

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"the OpenVINO backend runs fp32 or bf16, not {precision!r} (int8: --precision int8, "
                         "the PT2E path)")
    import openvino as ov

    sha = model_sha256 or state_dict_sha256(model)
    key = cache_key(sha, tuple(example.shape), example.dtype, f"openvino-{precision}", str(example.device))
    d = (cache_root or default_cache_root()) / key
    ir = d / OPENVINO_IR
    t0 = time.perf_counter()
    meta = {"model_sha256": sha, "shape": list(example.shape), "dtype": str(example.dtype),
            "backend": f"OpenVINO {ov.__version__} ({precision})"}
    reused = ir.is_file() and ir.with_suffix(".bin").is_file()
    core = ov.Core()
    if reused:
        ov_model = core.read_model(str(ir))
    else:
        d, unusable = entry_dir(key, cache_root)  # unwritable cache root: convert into a temporary folder
        ir = d / OPENVINO_IR
        if unusable:
            meta["cache_unusable"] = unusable
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ov_model = ov.convert_model(model.eval(), example_input=example.float())
        tmp = d / f".tmp{os.getpid()}.{OPENVINO_IR}"
        ov.save_model(ov_model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), ir.with_suffix(".bin"))
        os.replace(tmp, ir)
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
              "INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY",
              "CACHE_DIR": str(d / "blob")}
    fn = OpenVINOModel(core.compile_model(ov_model, "CPU", config))
    info = CompileInfo(key, str(d), reused, time.perf_counter() - t0, meta)
    if not reused:
        (d / "medvit_compile.json").write_text(json.dumps(info.to_dict(), indent=2))
    logger.info("%s OpenVINO model %s in %.1f s", "loaded" if reused else "converted and compiled", ir, info.seconds)
    return fn, info


def quantize_int8_pt2e(model: nn.Module, calibration: Sequence[torch.Tensor],
                       qparams: Mapping[str, Any] | None = None) -> nn.Module:
    """Static int8 (PT2E, x86 Inductor quantizer): export → prepare → calibrate (or fix to ``qparams``) → convert.

    The one quantisation path, :func:`medvit.compress.pt2e.quantize_pt2e_x86`: ``calibration`` holds float32
    input batches (B, C, H, W) of the real data; ``qparams`` (a PTQ checkpoint's :class:`~medvit.compress.pt2e.
    LinearQParams` per linear, :mod:`medvit.compress.ptq`) replaces calibration. Compile the result with
    :func:`compile_cached` (Inductor fuses the quantise/dequantise pairs into oneDNN int8 kernels — run eagerly it
    is a slow reference). Raises ``ImportError`` without ``torchao``.
    """
    from medvit.compress.pt2e import quantize_pt2e_x86

    return quantize_pt2e_x86(model, calibration, qparams)


INT8_REST = ("fp32", "bf16")


def resolve_int8_rest(requested: str | None = None) -> tuple[str, str]:
    """(dtype of the non-GEMM ops of an int8 model, reason): ``"bf16"`` (int8-mixed-bf16: the quantised linears
    write bf16 and the norms, GELU, attention and residual adds run in bf16) where the CPU has native bf16, else
    ``"fp32"``; a requested ``"fp32"``/``"bf16"`` is returned as given. Raises ``ValueError`` for another value."""
    if requested is not None:
        if requested not in INT8_REST:
            raise ValueError(f"int8_rest must be one of {INT8_REST} or None (auto), got {requested!r}")
        return requested, "requested"
    if cpu_has_native_bf16():
        return "bf16", "auto: CPU has native bf16 (AVX512-BF16/AMX): int8 GEMMs, bf16 elsewhere"
    return "fp32", "auto: CPU has no native bf16: int8 GEMMs, fp32 elsewhere"


class AutocastBF16(nn.Module):
    """``module`` run under CPU bf16 autocast, outputs returned as float32 (a tensor or a tuple of tensors).

    Wrapped around a PT2E-quantised graph before ``torch.export``, the autocast region is kept in the exported
    program, so Inductor sees ``dequantize → to(bf16) → linear`` and lowers it to oneDNN int8 GEMMs with bf16 output
    (the "int8-mixed-bf16" recipe of the x86 Inductor quantizer); everything between the GEMMs runs in bf16 instead
    of fp32. (A global autocast context around ``torch.export`` is not captured: measured, no bf16 op in the graph.)
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.module(x)
        return tuple(o.float() for o in out) if isinstance(out, tuple | list) else out.float()


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def default_workers(device: str = "cpu", cores: int | None = None) -> int:
    """Decoding worker processes for ``medvit infer`` from the core count.

    On CPU the model's threads need the cores: one decoder per 4 cores (at least 1) keeps a ViT-S/16 or
    ViT-B/16 fed from 1024² DX files (decoding a 1024² file costs a few per cent of a ViT-B/16 forward
    pass per core; ``benchmarks/results/infer_fastpaths.md``). On CUDA the GPU does the model and decoding
    is the bottleneck: every core but one decodes (at most 16).
    """
    n = available_cores() if cores is None else cores
    if device.startswith("cuda"):
        return max(1, min(16, n - 1))
    return max(1, n // 4)
