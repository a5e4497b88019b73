"""A model's declared scope: no scope -> refused unless --any-modality (or --rules); non-image objects
(SEG, SR, KO, PR, RT) never scored; name and version from the contract."""

from __future__ import annotations

import csv

import pytest

from medvit.infer import InferConfig, run_inference
from tests.infer.helpers import make_model, write_dx


def _inbox(root):
    write_dx(root / "cxr.dcm", "1.2.826.0.1.1", "1.2.826.0.1.1.1", seed=1)
    write_dx(root / "ct.dcm", "1.2.826.0.1.2", "1.2.826.0.1.2.1", modality="CT", view=None, seed=2)
    for i, mod in enumerate(("SEG", "PR", "KO", "RTIMAGE")):
        write_dx(root / f"{mod.lower()}.dcm", "1.2.826.0.1.3", f"1.2.826.0.1.3.{i}", modality=mod, seed=3 + i)
    return root


def _status(out):
    with open(out / "status.csv", newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def test_model_without_scope_is_refused_unless_any_modality(tmp_path, capsys):
    from medvit.cli.main import main

    model = make_model(tmp_path / "model", modalities=())
    inbox = _inbox(tmp_path / "in")
    with pytest.raises(ValueError, match="--any-modality"):
        run_inference(InferConfig(str(model), str(inbox), str(tmp_path / "o1"), workers=0, progress=False))
    assert main(["infer", "-m", str(model), "-i", str(inbox), "-o", str(tmp_path / "o2"), "--workers", "0"]) == 2
    assert "declares no scope" in capsys.readouterr().err
    assert not (tmp_path / "o1" / "predictions.csv").exists()

    res = run_inference(InferConfig(str(model), str(inbox), str(tmp_path / "o3"), workers=0, any_modality=True,
                                    progress=False))
    st = _status(tmp_path / "o3")
    assert st["cxr.dcm"]["status"] == st["ct.dcm"]["status"] == "predicted"  # any modality: CT scored too
    for mod in ("seg", "pr", "ko", "rtimage"):  # ... but never segmentations, presentation states, KOs, RT
        assert st[f"{mod}.dcm"]["status"] == "skipped" and "not an image to score" in st[f"{mod}.dcm"]["reason"]
    assert res.counts["predicted"] == 2
    run = (tmp_path / "o3" / "run.json").read_text()
    assert '"any_modality": true' in run


def test_scoped_model_selects_by_contract_and_names_itself(tmp_path):
    from medvit.models import load_model, save_checkpoint

    model_dir = make_model(tmp_path / "model", modalities=("CR", "DX"))
    m = load_model(model_dir)
    m.contract.name, m.contract.version, m.contract.view_positions = "chest-test", "2.1", ["PA", "AP"]
    save_checkpoint(m, model_dir, contract=m.contract)
    inbox = _inbox(tmp_path / "in")
    write_dx(inbox / "lateral.dcm", "1.2.826.0.1.4", "1.2.826.0.1.4.1", view="LL", seed=9)
    write_dx(inbox / "noview.dcm", "1.2.826.0.1.5", "1.2.826.0.1.5.1", view=None, seed=10)
    run_inference(InferConfig(str(model_dir), str(inbox), str(tmp_path / "o"), workers=0, sr=True, progress=False))
    st = _status(tmp_path / "o")
    assert st["cxr.dcm"]["status"] == "predicted"
    assert st["noview.dcm"]["status"] == "predicted"  # View Position is Type 2: empty is accepted, a wrong one is not
    assert st["lateral.dcm"]["status"] == "skipped" and "ViewPosition=LL" in st["lateral.dcm"]["reason"]
    assert st["ct.dcm"]["status"] == "skipped" and st["ct.dcm"]["stage"] == "select"
    with open(tmp_path / "o" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["model_name"], r["model_version"]) for r in rows} == {("chest-test", "2.1")}
    import pydicom

    sr = pydicom.dcmread(next((tmp_path / "o" / "sr").glob("*.dcm")))
    assert "chest-test" in str(sr.to_json_dict())


@pytest.mark.parametrize(("key", "value"), [("modalities", "DX"), ("view_positions", ["PA", 3]),
                                            ("body_parts", "CHEST"), ("label_names", "Effusion"),
                                            ("thresholds", "0.5"), ("multilabel", "yes"), ("input_size", 32)])
def test_contract_of_wrong_type_refused_at_load_naming_file_and_key(tmp_path, capsys, key, value):
    """``"modalities": "DX"`` once became the rule (?i)^(D|X)$ and silently selected nothing: every contract value
    of the wrong JSON type is refused when the model loads, naming config.json and the key."""
    import json

    from medvit.cli.main import main
    from medvit.models import load_model

    model = make_model(tmp_path / "model")
    cfg_path = model / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["contract"][key] = value
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"config\.json: contract key '{key}' must be"):
        load_model(model)
    write_dx(tmp_path / "in" / "a.dcm", "1.2.826.0.1.1", "1.2.826.0.1.1.1")
    out = tmp_path / "out"
    assert main(["infer", "-m", str(model), "-i", str(tmp_path / "in"), "-o", str(out), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert str(cfg_path) in err and repr(key) in err, err
    assert not (out / "predictions.csv").exists()


def test_contract_scope_list_still_selects(tmp_path):
    """The valid form of the same scope selects the DX image (the refusal above is not a blanket one)."""
    model = make_model(tmp_path / "model", modalities=("DX",))
    write_dx(tmp_path / "in" / "a.dcm", "1.2.826.0.1.1", "1.2.826.0.1.1.1")
    res = run_inference(InferConfig(str(model), str(tmp_path / "in"), str(tmp_path / "out"), workers=0,
                                    progress=False))
    assert res.counts["predicted"] == 1
