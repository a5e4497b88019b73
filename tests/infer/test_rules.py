"""Series selection rules: MONAI Deploy grammar, contract defaults, readable reasons, validation."""

from __future__ import annotations

import json

import pytest

from medvit.io.rules import RulesError, SelectionRules
from medvit.models import WeightContract

CXR = {"Modality": "DX", "ImageType": ["ORIGINAL", "PRIMARY"], "ViewPosition": "PA", "Rows": 2048,
       "ImageOrientationPatient": [1, 0, 0, 0, 1, 0]}


def rules(cond: dict) -> SelectionRules:
    return SelectionRules.from_dict({"selections": [{"name": "s", "conditions": cond}]})


@pytest.mark.parametrize("cond, ok", [
    ({"Modality": "(?i)^(cr|dx)$"}, True),
    ({"Modality": "CT"}, False),
    ({"ImageType": ["PRIMARY"]}, True),
    ({"ImageType": ["PRIMARY", "!SECONDARY"]}, True),
    ({"ImageType": ["!ORIGINAL"]}, False),
    ({"ImageType": ["PRIMARY", "LOCALIZER"]}, False),
    ({"Rows": 2048}, True),
    ({"Rows": [1024, 4096]}, True),
    ({"Rows": [4096, 8192]}, False),
    ({"Rows": [2048, ">="]}, True),
    ({"Rows": [2048, ">"]}, False),
    ({"ImageOrientationPatient": "Axial"}, True),
    ({"ImageOrientationPatient": "Sagittal"}, False),
    ({"BodyPartExamined": "CHEST"}, False),  # missing attribute fails
])
def test_grammar(cond, ok):
    name, reason = rules(cond).match(CXR)
    assert (name == "s") is ok
    assert (reason == "") is ok
    if not ok:
        assert next(iter(cond)) in reason


def test_first_match_wins_and_no_rules_select_all():
    r = SelectionRules.from_dict({"selections": [{"name": "ct", "conditions": {"Modality": "CT"}},
                                                 {"name": "xr", "conditions": {"Modality": "DX"}}]})
    assert r.match(CXR) == ("xr", "")
    assert SelectionRules([]).match({}) == ("all", "")


def test_contract_defaults():
    c = WeightContract(in_chans=1, label_names=["a"], modalities=["CR", "DX"], view_positions=["PA", "AP"])
    r = SelectionRules.from_contract(c)
    assert r.match(CXR)[0] == "model_contract"
    assert r.match(dict(CXR, ViewPosition="LL"))[0] is None
    assert r.match(dict(CXR, Modality="cr"))[0] == "model_contract"  # case-insensitive
    assert r.match(dict(CXR, Modality="CRX"))[0] is None  # anchored
    assert SelectionRules.from_contract(WeightContract(label_names=["a"])).selections == []


def test_from_file_and_pydicom_dataset(tmp_path):
    from pydicom.dataset import Dataset

    f = tmp_path / "rules.json"
    f.write_text(json.dumps({"selections": [{"name": "cxr", "conditions": {"Modality": "(?i)(CR|DX)",
                                                                           "ImageType": ["PRIMARY"]}}]}))
    r = SelectionRules.from_file(f)
    ds = Dataset()
    ds.Modality, ds.ImageType = "CR", ["ORIGINAL", "PRIMARY"]
    assert r.match(ds) == ("cxr", "")
    assert r.keywords == {"Modality", "ImageType"}


@pytest.mark.parametrize("doc, msg", [
    ({"nope": []}, "selections"),
    ({"selections": [{"conditions": {"Modality": "("}}]}, "invalid regular expression"),
    ({"selections": [{"conditions": {"Rows": [1, "~"]}}]}, "list condition"),
    ({"selections": [{"conditions": {"Rows": True}}]}, "condition must be"),
    ({"selections": [{"conditions": {"Rows": {"a": 1}}}]}, "unsupported condition"),
])
def test_bad_rules_raise(doc, msg):
    with pytest.raises(RulesError, match=msg):
        SelectionRules.from_dict(doc)


@pytest.mark.parametrize("selections", ["null", "5", '"abc"', '{"a": 1}'])
def test_selections_of_the_wrong_type_name_the_file(tmp_path, selections):
    """breaker B12: null / a number gave a bare TypeError ('NoneType' object is not iterable); a string was
    iterated letter by letter ("selection 0 must be an object")."""
    f = tmp_path / "r.json"
    f.write_text(f'{{"selections": {selections}}}')
    with pytest.raises(RulesError, match=r'r\.json: "selections" must be a list of objects .*, got (null|number|string|'
                                         r'object)$'):
        SelectionRules.from_file(f)
    f.write_text('{"selections": [{"name": {"a": 1}, "conditions": {}}]}')
    with pytest.raises(RulesError, match=r"r\.json: selection 0: 'name' must be a string, got object"):
        SelectionRules.from_file(f)


def test_bad_json_names_file(tmp_path):
    f = tmp_path / "r.json"
    f.write_text("{not json")
    with pytest.raises(RulesError, match="r.json"):
        SelectionRules.from_file(f)


def test_one_rules_module():
    """The rules live in medvit.io.rules only (infer and the VLM experts import it there); the former
    medvit.infer.rules re-export was an indirection nothing documented or imported."""
    import importlib.util

    assert importlib.util.find_spec("medvit.io.rules") is not None
    assert importlib.util.find_spec("medvit.infer.rules") is None
