"""`medvit infer --compile inductor` compiles once per model and input shape (issue 24): a second run loads the
package (no compilation: counted on the compiler entry point, not timed), a changed model compiles anew.
bf16 weights compiled: probabilities within 0.03 of eager fp32 (the bf16 tolerance of tests/infer/test_fastpath.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    import medvit
    from medvit.data.phantom_cxr import CXR_LABELS, ChestPhantomGenerator
    from medvit.io.writers import write_dicom_dx
    from medvit.models import WeightContract, save_checkpoint

    root = tmp_path_factory.mktemp("compiled_runs")
    gen = ChestPhantomGenerator(64, seed=2, with_masks=False)
    for i in range(12):  # in/: img0-5; more/: img6-11 (int8 calibration batches need >= 8 images)
        ph = gen.sample(i, patient=i // 3)
        write_dicom_dx(root / ("in" if i < 6 else "more") / f"img{i}.dcm",
                       np.round(ph.image * 4095).astype(np.uint16), dict(ph.meta), window=(2048.0, 4096.0))
    torch.manual_seed(0)
    m = medvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                            in_chans=1, num_classes=len(CXR_LABELS))
    torch.nn.init.normal_(m.head.weight, std=0.5)
    c = WeightContract(in_chans=1, input_size=(32, 32), mean=(0.5,), std=(0.25,), label_names=list(CXR_LABELS),
                       modalities=["DX"], version="t", source="tests")
    a = save_checkpoint(m, root / "model_a", contract=c)
    with torch.no_grad():
        m.head.bias[0] += 0.5  # another model: another hash
    b = save_checkpoint(m, root / "model_b", contract=c)
    return {"root": root, "a": a, "b": b}


def _run(material, model, name, **kw):
    from medvit.infer import InferConfig, run_inference

    out = material["root"] / name
    res = run_inference(InferConfig(str(material[model]), str(material["root"] / "in"), str(out), batch_size=4,
                                    workers=0, progress=False, **kw))
    assert res.exit_code == 0 and res.counts["predicted"] == 6
    run = json.loads((out / "run.json").read_text())
    probs = {json.loads(x)["file"]: list(json.loads(x)["probabilities"].values())
             for x in (out / "predictions.jsonl").read_text().splitlines()}
    return run["execution"], probs


def test_compiled_runs_reuse_the_cache_and_recompile_for_another_model(material, monkeypatch):
    monkeypatch.setenv("MEDVIT_COMPILE_CACHE", str(material["root"] / "cache"))
    compiles = []
    real = torch._inductor.aoti_compile_and_package
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package",
                        lambda *a, **k: compiles.append(1) or real(*a, **k))
    first, p1 = _run(material, "a", "run1", precision="bf16", compile="inductor")
    assert compiles == [1] and first["compile_cache"]["reused"] is False and first["precision"] == "bf16"
    second, p2 = _run(material, "a", "run2", precision="bf16", compile="inductor")  # a later run: loads it
    assert compiles == [1] and second["compile_cache"]["reused"] is True
    assert second["compile_cache"]["key"] == first["compile_cache"]["key"] and p2 == p1
    third, _ = _run(material, "b", "run3", precision="bf16", compile="inductor")  # changed weights
    assert compiles == [1, 1] and third["compile_cache"]["reused"] is False
    assert third["compile_cache"]["key"] != first["compile_cache"]["key"]
    _, ref = _run(material, "a", "eager", precision="fp32")
    assert max(np.abs(np.subtract(p1[f], ref[f])).max() for f in ref) <= 0.03


def _count_compiles(monkeypatch):
    compiles = []
    real = torch._inductor.aoti_compile_and_package
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package",
                        lambda *a, **k: compiles.append(1) or real(*a, **k))
    return compiles


def test_unusable_compile_cache_warns_and_compiles_without_caching(material, monkeypatch, caplog):
    """F11: $MEDVIT_COMPILE_CACHE naming a file aborted the run (NotADirectoryError traceback, no predictions)."""
    bad = material["root"] / "not_a_folder"
    bad.write_text("a file")
    monkeypatch.setenv("MEDVIT_COMPILE_CACHE", str(bad))
    compiles = _count_compiles(monkeypatch)
    with caplog.at_level("WARNING", logger="medvit.infer.fastpath"):
        ex, probs = _run(material, "a", "run_badcache", precision="fp32", compile="inductor")
    assert compiles == [1] and ex["compile_cache"]["reused"] is False and len(probs) == 6
    why = ex["compile_cache"]["cache_unusable"]
    assert f"$MEDVIT_COMPILE_CACHE={bad}" in why and "not a writable folder" in why
    assert any(f"$MEDVIT_COMPILE_CACHE={bad}" in r.getMessage() and "without caching" in r.getMessage()
               for r in caplog.records)
    assert bad.read_text() == "a file"
    _, eager = _run(material, "a", "eager_badcache", precision="fp32")
    assert max(np.abs(np.subtract(probs[f], eager[f])).max() for f in eager) <= 1e-4


def test_int8_result_and_cache_do_not_depend_on_the_other_files_of_the_run(material, monkeypatch, tmp_path):
    """F13: the int8 package was keyed on (and calibrated on) the run's first batch, so a new inbox re-quantised and
    recompiled and a file's probabilities depended on its companions. Now one package per model + shape: the second
    inbox (other companions, another size) loads it (compiler calls counted) and img0 gets identical probabilities."""
    pytest.importorskip("torchao")
    import shutil

    from medvit.infer import InferConfig, run_inference

    monkeypatch.setenv("MEDVIT_COMPILE_CACHE", str(tmp_path / "cache"))
    compiles = _count_compiles(monkeypatch)
    got = {}
    x = ["img0", "img1", "img2", "img6", "img7", "img8", "img9", "img10"]
    for name, files in (("x", x), ("y", ["img0", "img3", "img4", "img5", "img11", "img6", "img9", "img7", "img2"])):
        inbox = tmp_path / f"inbox_{name}"
        inbox.mkdir()
        for f in files:
            src = material["root"] / ("in" if int(f[3:]) < 6 else "more") / f"{f}.dcm"
            shutil.copy(src, inbox / f"{f}.dcm")
        out = tmp_path / f"out_{name}"
        res = run_inference(InferConfig(str(material["a"]), str(inbox), str(out), batch_size=8, workers=0,
                                        precision="int8", progress=False))
        assert res.exit_code == 0 and res.counts["predicted"] == len(files)
        recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
        got[name] = ({r["file"]: r["probabilities"] for r in recs}, json.loads((out / "run.json").read_text()))
    (px, rx), (py, ry) = got["x"], got["y"]
    assert compiles == [1]  # the second inbox reused the package: no quantisation, no compile
    cx, cy = rx["execution"]["compile_cache"], ry["execution"]["compile_cache"]
    assert cx["key"] == cy["key"] and cx["reused"] is False and cy["reused"] is True and cy["shape"][0] == 8
    assert px["img0.dcm"] == py["img0.dcm"] and px["img2.dcm"] == py["img2.dcm"]
    calx, caly = rx["execution"]["int8_calibration"], ry["execution"]["int8_calibration"]
    assert calx["run_independent"] is False and calx["images"] == 8 and caly["images"] == 8
    assert caly["input_sha256"] == calx["input_sha256"] and "earlier run" in caly["source"]
