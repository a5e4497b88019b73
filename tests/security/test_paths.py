"""Header values never become paths; every write stays inside OUTPUT; -o inside -i is refused (SECURITY.md §1)."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import pytest

from medvit.infer import InferConfig, run_inference
from medvit.io.safe_write import (
    UnsafePathError,
    atomic_write,
    checked_path,
    path_component,
    remove_dead_temporaries,
)
from tests.infer.helpers import make_model, make_studies, write_dx


def _digest(tree: Path) -> dict[str, str]:
    return {p.relative_to(tree).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bad", ["../../../victim/target", "/ABSOLUTE/victim/target", "1.2.3/../../x", "..",
                                 "1.2.3\x00", "1." + "9" * 70, "01.2"])
def test_path_component_hashes_anything_but_a_uid(bad):
    c = path_component(bad)
    assert c.startswith("h-") and "/" not in c and ".." not in c and len(c) == 34
    assert path_component(bad) == c  # stable
    assert path_component("1.2.840.10008.5.1.4.1.1.7") == "1.2.840.10008.5.1.4.1.1.7"
    assert path_component("") == "unknown"


def test_checked_path_and_atomic_write_refuse_escape_and_symlinks(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("patient data")
    with pytest.raises(UnsafePathError):
        checked_path(out, out / ".." / "victim.txt")
    with pytest.raises(UnsafePathError):
        atomic_write(tmp_path / "victim.txt", b"x", root=out)
    (out / "link").symlink_to(tmp_path)  # a folder inside OUTPUT that points out of it
    with pytest.raises(UnsafePathError):
        atomic_write(out / "link" / "victim.txt", b"x", root=out)
    assert victim.read_text() == "patient data"
    atomic_write(out / "ok.txt", "kept", root=out)
    assert (out / "ok.txt").read_text() == "kept"
    assert oct((out / "ok.txt").stat().st_mode & 0o777) == oct(0o600)
    # a temp file of a dead writer is removed, a live writer's is kept
    dead = out / ".ok.txt.tmp999999999.0123456789abcdef"
    live = out / f".ok.txt.tmp{os.getppid()}.0123456789abcdef"
    dead.write_bytes(b"")
    live.write_bytes(b"")
    assert remove_dead_temporaries(out) == [dead]
    assert live.exists() and not dead.exists()


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_traversal_uids_write_nothing_outside_output(tmp_path, kind):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    good = make_studies(inp, n_studies=1, per_study=2)
    victim_dir = tmp_path / "victim"
    victim = write_dx(victim_dir / "target.dcm", "1.2.3", "1.2.4", patient="OTHER")
    before = _digest(victim_dir)
    if kind == "relative":
        study, sop = "../../victim", "../victim/target"
    else:
        study, sop = str(victim_dir), str(victim_dir / "target")
    evil = write_dx(inp / "evil" / "evil.dcm", study, "1.2.5", seed=7)
    import pydicom

    ds = pydicom.dcmread(evil)
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.6"
    ds.save_as(evil)
    out = tmp_path / "out"
    outside_before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    res = run_inference(InferConfig(str(model), str(inp), str(out), workers=0, batch_size=2, sr=True,
                                    heatmaps=True, progress=False))
    assert _digest(victim_dir) == before, "a file outside OUTPUT was changed"
    assert victim.is_file()
    outside_after = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    assert outside_after == outside_before, f"new files outside OUTPUT: {outside_after - outside_before}"
    for p in out.rglob("*"):
        assert p.resolve().is_relative_to(out.resolve())
        assert ".." not in p.name
    # nothing already done is lost: every input has its row, the good study has its SR and heatmaps
    with open(out / "status.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert set(rows) == {p.relative_to(inp).as_posix() for p in [*good, evil]}
    assert all(rows[p.relative_to(inp).as_posix()]["status"] == "predicted" for p in good)
    assert res.counts["predicted"] >= len(good)
    assert len(list((out / "heatmaps").rglob("*.png"))) >= len(good)
    assert len(list((out / "sr").glob("*.dcm"))) >= 1
    hashed = [p for p in (out / "heatmaps").iterdir() if p.name.startswith("h-")]
    assert hashed, "the crafted study UID must map to a hashed folder"


def test_output_inside_input_is_refused(tmp_path):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    make_studies(inp, n_studies=1, per_study=1)
    for out in (inp, inp / "results", inp / "a" / ".." / "results"):
        with pytest.raises(ValueError, match="inside input"):
            InferConfig(str(model), str(inp), str(out))
    InferConfig(str(model), str(inp), str(tmp_path / "elsewhere"))  # a sibling is fine


def test_relative_root_and_path(tmp_path, monkeypatch):
    """`medvit infer -o results` passes a relative root and paths built from it (relative to the cwd)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    atomic_write(Path("results") / "run.json", "{}", root=Path("results"))
    assert (tmp_path / "results" / "run.json").read_text() == "{}"
    with pytest.raises(UnsafePathError):
        checked_path(Path("results"), Path("elsewhere.txt"))
