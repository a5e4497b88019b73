"""Checkpoint files are byte-reproducible: the same tensors and metadata give the same SHA-256 (a retrained model
with bit-identical weights must match its committed checksum, pipelines/demo/model)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import torch
from safetensors.torch import load_file, save

from medvit.models.checkpoint import canonical_safetensors, write_safetensors


def _header(data: bytes) -> str:
    n = int.from_bytes(data[:8], "little")
    return data[8:8 + n].decode()


def test_metadata_is_written_in_sorted_order_and_reads_back(tmp_path):
    t = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3)}
    meta = {"format": "medvit-checkpoint/1", "architecture": "vit", "rng": json.dumps({"a": "}{", "b": [1, 2]})}
    a = write_safetensors(tmp_path / "a.safetensors", t, metadata=meta)
    b = write_safetensors(tmp_path / "b.safetensors", t, metadata=dict(reversed(list(meta.items()))))
    assert a.read_bytes() == b.read_bytes()
    head = _header(a.read_bytes())
    assert head.index('"architecture"') < head.index('"format"') < head.index('"rng"')
    back = load_file(str(a))
    assert torch.equal(back["w"], t["w"]) and torch.equal(back["b"], t["b"])
    from safetensors import safe_open

    with safe_open(str(a), "pt") as f:
        assert f.metadata() == meta  # braces inside a value survive the rewrite


def test_canonical_form_is_the_same_in_every_process(tmp_path):
    """safetensors orders the metadata map by a per-process hash: write in fresh interpreters and compare."""
    code = ("import sys, torch; from medvit.models.checkpoint import write_safetensors; "
            "write_safetensors(sys.argv[1], {'x': torch.zeros(2)}, metadata={'format': 'f', 'architecture': 'a', "
            "'method': 'm', 'zeta': 'z'})")
    digests = set()
    for i in range(4):
        out = tmp_path / f"{i}.safetensors"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=120)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_files_without_a_metadata_map_pass_unchanged():
    data = save({"x": torch.zeros(2)})
    assert canonical_safetensors(data) == data
    one = save({"x": torch.zeros(2)}, metadata={"format": "f"})
    assert canonical_safetensors(one) == one
