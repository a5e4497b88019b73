"""One JSON-file reader (medvit.io.jsonfile) behind every reader of an outside JSON document: an invalid or
wrongly-shaped file gives the reader's own error type naming the file and the reason (line/column, expected
top level, format), never a JSONDecodeError / AttributeError / TypeError traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvit.io.jsonfile import parse_json, read_json


def test_read_json_gives_the_document_and_names_file_and_reason(tmp_path):
    f = tmp_path / "a.json"
    f.write_text('{"format": "x/1", "v": [1, 2]}')
    assert read_json(f) == {"format": "x/1", "v": [1, 2]}
    assert read_json(f, format_id="x/1")["v"] == [1, 2]
    with pytest.raises(ValueError, match=r"a\.json: format 'x/1' is not 'y/1'"):
        read_json(f, format_id="y/1")
    with pytest.raises(ValueError, match=r"a\.json: expected a JSON array, got object"):
        read_json(f, expect=list)
    f.write_text('{"v": 1,,}')
    with pytest.raises(ValueError, match=r"a\.json: not valid JSON \(Expecting property name enclosed in double "
                                         r"quotes, line 1 column 9\)"):
        read_json(f)
    f.write_bytes(b'{"v": "\xff"}')
    with pytest.raises(ValueError, match=r"a\.json: not valid JSON \(not UTF-8 text"):
        read_json(f)
    with pytest.raises(FileNotFoundError, match=r"nope\.json not found: a test file"):
        read_json(tmp_path / "nope.json", missing="a test file")
    with pytest.raises(ValueError, match=rf"{tmp_path.name}: is a directory, not a JSON file"):
        read_json(tmp_path)  # a folder is not a file, and is not reported as missing (breaker B5)


def test_domain_error_type_and_any_top_level():
    class MyError(ValueError):
        pass

    with pytest.raises(MyError, match=r"<string>: not valid JSON"):
        parse_json("[1,", "<string>", error=MyError)
    assert parse_json("[1]", "s", expect=None) == [1]
    with pytest.raises(MyError, match=r"s: expected a JSON object with key 'format' 'f/1', got array"):
        parse_json("[1]", "s", error=MyError, expect=None, format_id="f/1")


def test_a_missing_format_key_is_named_missing_not_format_none(tmp_path):
    """review-fix D3: a checkpoint config.json without 'format' was reported as "format None is not
    'medvit-checkpoint/1'"."""
    import json
    import shutil

    from medvit.models import load_model
    from medvit.models.checkpoint import CheckpointError

    with pytest.raises(ValueError, match=r"^s: key 'format' missing \(expected 'f/1'; is this a file medvit "
                                         r"wrote\?\)$"):
        parse_json('{"v": 1}', "s", format_id="f/1")
    with pytest.raises(ValueError, match=r"s: format None is not 'f/1'"):
        parse_json('{"format": null}', "s", format_id="f/1")  # present but null: its value is named
    ck = tmp_path / "m"
    shutil.copytree("pipelines/demo/model", ck)
    cfg = json.loads((ck / "config.json").read_text())
    del cfg["format"]
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"m/config\.json: key 'format' missing \(expected 'medvit-checkpoint/1'"):
        load_model(ck)


def _readers():
    """(name, file name inside a folder, call(folder) -> reads it, expected error type) for every reader."""
    from medvit.compress.stitch import load_stitched
    from medvit.data.benchx import IUXRay
    from medvit.data.phantom_datasets import PhantomFolderDataset
    from medvit.io.rules import RulesError, SelectionRules
    from medvit.models.checkpoint import CheckpointError, read_config
    from medvit.peft.checkpoint import AdapterError, read_adapter_config
    from medvit.train.logit_store import LogitStore
    from medvit.vlm.model import VisionLanguageModel
    from medvit.vlm.public import read_vqa_rad

    def feedback(d: Path):
        from apps.viewer.feedback import load

        return load(d / "fb.json")

    return [
        ("checkpoint config", "config.json", read_config, CheckpointError),
        ("adapter config", "adapter_config.json", read_adapter_config, AdapterError),
        ("stitched config", "config.json", load_stitched, CheckpointError),
        ("logit store meta", "meta.json", LogitStore.open, ValueError),
        ("VLM config", "vlm_config.json", VisionLanguageModel.load, ValueError),
        ("IU X-ray annotation", "annotation.json", lambda d: IUXRay(d, split="test"), ValueError),
        ("phantom manifest", "manifest.json", PhantomFolderDataset, ValueError),
        ("rules file", "rules.json", lambda d: SelectionRules.from_file(d / "rules.json"), RulesError),
        ("viewer feedback", "fb.json", feedback, ValueError),
        ("VQA-RAD items", "vqa.json", lambda d: read_vqa_rad(d / "vqa.json"), ValueError),
    ]


@pytest.mark.parametrize("case", _readers(), ids=lambda c: c[0])
def test_every_reader_refuses_invalid_json_naming_the_file(tmp_path, case):
    _, name, call, err = case
    (tmp_path / name).write_text('{"format": ')
    with pytest.raises(err, match=rf"{name}: not valid JSON \(Expecting value, line 1 column 12\)"):
        call(tmp_path)


@pytest.mark.parametrize("case", [c for c in _readers() if c[0] not in ("rules file", "VQA-RAD items")],
                         ids=lambda c: c[0])
def test_every_object_reader_refuses_another_top_level_naming_the_file(tmp_path, case):
    """Before: AttributeError ('list' object has no attribute 'get'), TypeError or a misleading 'lacks key'."""
    _, name, call, err = case
    (tmp_path / name).write_text("[1, 2]")
    with pytest.raises(err, match=rf"{name}: expected a JSON object, got array"):
        call(tmp_path)


# breaker B1 / B2: json.loads raises a plain ValueError (int over sys.get_int_max_str_digits()) or RecursionError for
# these, neither of which was caught: no file name, a developer's advice or a raw traceback
_HOSTILE = {
    "over-long integer": ('{"format": ' + "9" * 5000 + "}", r"not valid JSON \(a number has more than \d+ digits\)"),
    "deep nesting": ("[" * 200_000 + "]" * 200_000, r"not valid JSON \(nested too deeply\)"),
    "NaN literal": ('{"format": NaN}', r"format is NaN, not a finite number \(NaN and Infinity are not JSON\)"),
}


@pytest.mark.parametrize("kind", sorted(_HOSTILE))
@pytest.mark.parametrize("case", _readers(), ids=lambda c: c[0])
def test_every_reader_refuses_hostile_json_naming_the_file(tmp_path, case, kind):
    _, name, call, err = case
    text, reason = _HOSTILE[kind]
    if kind == "NaN literal" and name in ("vqa.json", "rules.json"):
        text = "[NaN]" if name == "vqa.json" else '{"selections": [], "x": NaN}'
        reason = reason.replace("format is", r"(\[0\]|x) is")
    (tmp_path / name).write_text(text)
    with pytest.raises(err, match=rf"{name}: {reason}"):
        call(tmp_path)


def test_non_finite_numbers_are_named_by_key_unless_the_caller_allows_them(tmp_path):
    """breaker B3: NaN / Infinity are not JSON (RFC 8259); Python's json accepted them, so a contract threshold NaN
    loaded silently (``p >= NaN`` never calls the finding)."""
    doc = '{"contract": {"thresholds": [0.5, -Infinity]}, "extra": {"best": NaN}}'
    with pytest.raises(ValueError, match=r"s: contract\.thresholds\[1\] is -Infinity, not a finite number"):
        parse_json(doc, "s", nonfinite_ok=("extra",))
    with pytest.raises(ValueError, match=r"s: contract\.thresholds\[1\] is -Infinity"):
        parse_json(doc, "s")  # first in document order
    got = parse_json('{"extra": {"best": NaN}, "v": 1}', "s", nonfinite_ok=("extra",))
    assert got["v"] == 1 and got["extra"]["best"] != got["extra"]["best"]  # NaN kept where the caller allows it


def test_overflowing_numbers_are_as_non_finite_as_infinity():
    """recheck N1: ``1e999`` is valid JSON syntax but float() makes it inf (an adapter "alpha": 1e999 loaded and
    predicted NaN everywhere); it is refused like the Infinity literal, and tolerated where the caller allows it."""
    with pytest.raises(ValueError, match=r"s: alpha is Infinity, not a finite number"):
        parse_json('{"alpha": 1e999}', "s")
    with pytest.raises(ValueError, match=r"s: rules\[0\]\.gt is -Infinity"):
        parse_json('{"rules": [{"gt": -1e999}]}', "s")
    assert parse_json('{"extra": {"x": 1e999}, "v": 1e300}', "s", nonfinite_ok=("extra",))["v"] == 1e300


def test_special_files_and_byte_order_mark(tmp_path):
    """breaker B5 / B6: a device is reported as such (never read); a UTF-8 BOM (Windows Notepad) is accepted."""
    import os

    dev = tmp_path / "dev.json"
    os.symlink(os.devnull, dev)
    with pytest.raises(ValueError, match=r"dev\.json: is a device, not a JSON file"):
        read_json(dev)
    f = tmp_path / "bom.json"
    f.write_bytes(b"\xef\xbb\xbf" + b'{"v": 1}')
    assert read_json(f) == {"v": 1}
    assert parse_json("\ufeff[1]", "s", expect=list) == [1]


def test_checkpoint_nan_threshold_refused_at_load_naming_file_and_key(tmp_path):
    """breaker B3 / B9: load_model accepted contract.thresholds [NaN, ...]; `medvit infer` then failed late with
    "Out of range float values are not JSON compliant". A NaN metric under ``extra`` (written by the code itself,
    e.g. an undefined validation AUROC) still loads."""
    import json

    from medvit.models import WeightContract, create_model, load_model
    from medvit.models.checkpoint import CheckpointError, save_checkpoint
    from tests.conftest import tiny_args

    name = "vit_tiny_patch16_224"
    model = create_model(name, **tiny_args(name), num_classes=2)
    c = WeightContract(input_size=(32, 32), label_names=["A", "B"], thresholds=[0.3, 0.6])
    out = save_checkpoint(model, tmp_path / "m", contract=c, extra={"best": float("nan")})
    assert load_model(out).contract.thresholds == [0.3, 0.6]
    cfg = json.loads((out / "config.json").read_text())
    cfg["contract"]["thresholds"][0] = float("nan")
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"m/config\.json: contract\.thresholds\[0\] is NaN, not a finite"):
        load_model(out)
    with pytest.raises(ValueError, match=r"'thresholds' must be a list of finite numbers"):
        WeightContract(input_size=(32, 32), label_names=["A"], thresholds=[float("nan")])
    with pytest.raises(ValueError, match=r"'thresholds' must hold probabilities in \[0, 1\]"):
        WeightContract(input_size=(32, 32), label_names=["A"], thresholds=[1.5])


@pytest.mark.parametrize("name, edit, reason", [
    ("config.json", {"architecture": 5},
     r"'architecture' must be a registered architecture name \(a string\), got number"),
    ("config.json", {"model_args": [1, 2]}, r"'model_args' must be an object \{argument: value\}, got array"),
    ("config.json", {"format": 5}, r"format 5 is not 'medvit-checkpoint/1'"),  # recheck: loaded unchecked
    ("adapter_config.json", {"base": "vit"}, r"'base' must be an object, got string"),
    ("adapter_config.json", {"base": {"weights": 5}}, r"'base\.weights' must be a string or null, got number"),
    ("adapter_config.json", {"method_config": []}, r"'method_config' must be an object, got array"),
], ids=["architecture", "model_args", "format", "adapter base", "adapter base.weights", "adapter method_config"])
def test_wrong_types_one_level_down_name_file_and_key(tmp_path, name, edit, reason):
    """breaker B4 / B19: a checkpoint or adapter config with a wrong-typed value gave a bare TypeError /
    AttributeError ("argument of type 'int' is not iterable", "'str' object has no attribute 'get'")."""
    import json

    from medvit.models.checkpoint import CheckpointError, read_config
    from medvit.peft.checkpoint import FORMAT, AdapterError, read_adapter_config

    if name == "config.json":
        from medvit.models.checkpoint import FORMAT as CKPT

        doc = {"format": CKPT, "architecture": "vit_tiny_patch16_224", "model_args": {}}
        call, err = read_config, CheckpointError
    else:
        doc = {"format": FORMAT, "method": "lora", "method_config": {}, "base": {}, "tensors": {}}
        call, err = read_adapter_config, AdapterError
    doc.update(edit)
    (tmp_path / name).write_text(json.dumps(doc))
    with pytest.raises(err, match=rf"{name}: {reason}"):
        call(tmp_path)


@pytest.mark.parametrize("edit, reason", [
    ({"model_args": {"depth": "abc"}}, r"model_args\.depth: expected an integer, got 'abc'"),
    ({"model_args": {"depth": 0}}, r"model_args\.depth must be a positive int, got 0"),
    ({"model_args": {"nosuch_arg": 1}}, r"model_args: backbone 'vit_tiny_patch16_224' does not accept 'nosuch_arg'"),
    ({"architecture": "vit_tiny_patch16_22"}, r"architecture: unknown backbone 'vit_tiny_patch16_22'; did you mean"),
], ids=["depth string", "depth 0", "unknown arg", "unknown architecture"])
def test_checkpoint_model_args_values_are_refused_naming_file_and_key(tmp_path, edit, reason):
    """recheck B4 residual: a value inside model_args was refused without the file (`depth must be a positive int,
    got 'abc'`; `backbone ... does not accept 'nosuch_arg'`)."""
    import json

    from medvit.models import create_model, load_model
    from medvit.models.checkpoint import CheckpointError, save_checkpoint
    from tests.conftest import tiny_args

    name = "vit_tiny_patch16_224"
    out = save_checkpoint(create_model(name, **tiny_args(name), num_classes=2), tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    for k, v in edit.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=rf"m/config\.json: {reason}"):
        load_model(out)


@pytest.mark.parametrize("keys, value, reason", [
    (["img_size"], "abc", r"model_args\.img_size: 'abc' fits none of .*expected an integer, got 'abc'"),
    (["num_labels"], "x", r"model_args\.num_labels: expected an integer, got 'x'"),
    (["backbone_args", "depth"], "abc", r"model_args\.backbone_args\.depth: expected an integer, got 'abc'"),
    (["backbone_args", "nosuch"], 1, r"model_args\.backbone_args: backbone 'vit_tiny_patch16_224' does not accept "
                                     r"'nosuch'"),
    (["backbone"], "nosuch_vit", r"model_args\.backbone: unknown backbone 'nosuch_vit'"),
    (["backbone_pretrained"], "/etc/hostname", r"model_args\.backbone_pretrained: '/etc/hostname' is a weights path "
                                               r"read from the file \(refused"),
], ids=["img_size string", "num_labels string", "nested depth string", "nested unknown arg", "unknown backbone",
        "backbone_pretrained path"])
def test_model_args_are_checked_by_the_constructors_annotations_naming_the_key(tmp_path, keys, value, reason):
    """review-fix D1: model_builder took the key from the first word of the constructor's message, so
    img_size "abc" gave "model_args: invalid literal for int() ...", a segmenter's num_labels "x" a bare "'<' not
    supported ...", backbone_args.nosuch was named "model_args.backbone", an unknown nested backbone was a raw
    KeyError, and a backbone_pretrained path read from config.json was opened. Each is refused before any weight is
    read, naming config.json and the key."""
    import json
    import shutil

    from medvit.models import load_model
    from medvit.models.checkpoint import CheckpointError

    ck = tmp_path / "m"
    shutil.copytree("pipelines/segmentation/model", ck)
    cfg = json.loads((ck / "config.json").read_text())
    if keys == ["img_size"]:
        cfg = {**cfg, "architecture": "vit_tiny_patch16_224", "model_args": {}}
    t = cfg["model_args"]
    for k in keys[:-1]:
        t = t[k]
    t[keys[-1]] = value
    (ck / "config.json").write_text(json.dumps(cfg))
    (ck / "model.safetensors").write_bytes(b"refused before this is read")
    with pytest.raises(CheckpointError, match=rf"m/config\.json: {reason}"):
        load_model(ck)


def test_adapter_base_weights_path_is_followed_only_with_its_checksum(tmp_path):
    """breaker B19: ``base.weights`` read from adapter_config.json was opened as a path (``/etc/hostname`` ->
    "is not a readable safetensors file"); the checksum was checked only when the same file recorded one."""
    import json

    from medvit.peft.checkpoint import FORMAT, AdapterError, load_adapter

    target = tmp_path / "elsewhere.safetensors"
    target.write_bytes(b"not weights")
    base = {"architecture": "vit_tiny_patch16_224", "weights": str(target)}
    doc = {"format": FORMAT, "method": "lora", "method_config": {}, "base": base, "tensors": {}}
    (tmp_path / "adapter_config.json").write_text(json.dumps(doc))
    with pytest.raises(AdapterError, match=r"adapter_config\.json: key 'base\.weights' names the file .*"
                                           r"elsewhere\.safetensors, but 'base\.weights_sha256' is not recorded"):
        load_adapter(tmp_path)
    base["weights_sha256"] = "0" * 64
    (tmp_path / "adapter_config.json").write_text(json.dumps(doc))
    with pytest.raises(AdapterError, match=r"has changed since the adapter was trained"):
        load_adapter(tmp_path)


def test_adapter_base_model_args_are_refused_naming_file_and_key(tmp_path):
    """recheck B4 residual, adapter side: base.model_args values went to the constructor unnamed; an unknown
    argument is refused before the base weights file is read."""
    import json

    import torch
    from safetensors.torch import save_file

    from medvit.models.checkpoint import sha256_file
    from medvit.peft.checkpoint import FORMAT, AdapterError, load_adapter

    target = tmp_path / "base.safetensors"
    save_file({"x": torch.zeros(1)}, target)  # readable: the sizes are checked against its header first
    base = {"architecture": "vit_tiny_patch16_224", "weights": str(target), "model_args": {"nosuch_arg": 1}}
    doc = {"format": FORMAT, "method": "lora", "method_config": {}, "base": base, "tensors": {}}
    (tmp_path / "adapter_config.json").write_text(json.dumps(doc))
    with pytest.raises(AdapterError, match=r"adapter_config\.json: base\.model_args: backbone "
                                           r"'vit_tiny_patch16_224' does not accept 'nosuch_arg'"):
        load_adapter(tmp_path)  # no sha recorded: the weights path would be refused next
    base.update(model_args={"depth": "abc"}, weights_sha256=sha256_file(target))
    (tmp_path / "adapter_config.json").write_text(json.dumps(doc))
    with pytest.raises(AdapterError, match=r"adapter_config\.json: base\.model_args\.depth: expected an integer, "
                                           r"got 'abc'"):
        load_adapter(tmp_path)


@pytest.mark.parametrize("sha", [None, "0" * 64], ids=["no sha", "with sha"])
def test_adapter_base_weights_on_a_device_is_named_not_a_regular_file(tmp_path, sha):
    """recheck B19 wording: ``base.weights: /dev/zero`` (a device; it exists) was reported as "not found ... nor
    is it a registered weight tag". Refused without opening it, saying what it is; the same for a model's
    ``pretrained``."""
    import json
    import os

    from medvit.models import create_model
    from medvit.peft.checkpoint import FORMAT, AdapterError, load_adapter

    base = {"architecture": "vit_tiny_patch16_224", "weights": os.devnull}
    if sha:
        base["weights_sha256"] = sha
    doc = {"format": FORMAT, "method": "lora", "method_config": {}, "base": base, "tensors": {}}
    (tmp_path / "adapter_config.json").write_text(json.dumps(doc))
    with pytest.raises(AdapterError, match=r"adapter_config\.json: key 'base\.weights': /dev/null: is a device, "
                                           r"not a weights file"):
        load_adapter(tmp_path)
    with pytest.raises(ValueError, match=r"/dev/null: is a device, not a weights file"):
        create_model("vit_tiny_patch16_224", pretrained=os.devnull, img_size=32, depth=1, embed_dim=32, num_heads=2)


def test_adapter_base_weights_wording_names_the_config_key_and_what_the_path_is(tmp_path, monkeypatch):
    """breaker33 B12: a checkpoint folder whose model.safetensors is a FIFO was said to "hold no
    model.safetensors"; a relative base.weights that does not exist gave a bare FileNotFoundError naming neither
    adapter_config.json nor the key; /proc/self/environ was read and hashed."""
    import json
    import os

    from medvit.models import create_model
    from medvit.peft.checkpoint import FORMAT, AdapterError, load_adapter

    ck = tmp_path / "ck"
    ck.mkdir()
    os.mkfifo(ck / "model.safetensors")
    ad = tmp_path / "ad"
    ad.mkdir()
    for weights, reason in [(str(ck), r"ck/model\.safetensors: is a FIFO \(named pipe\), not a weights file"),
                            ("/proc/self/environ", r"/proc/self/environ: a /proc pseudo-file, not a weights file"),
                            ("base/model.safetensors", r"'base/model\.safetensors' is no file or folder \(a relative "
                                                       r"path is read from the current directory, .*\) nor a "
                                                       r"registered weight tag")]:
        base = {"architecture": "vit_tiny_patch16_224", "weights": weights, "weights_sha256": "0" * 64}
        doc = {"format": FORMAT, "method": "lora", "method_config": {}, "base": base, "tensors": {}}
        (ad / "adapter_config.json").write_text(json.dumps(doc))
        monkeypatch.chdir(tmp_path)
        with pytest.raises(AdapterError, match=rf"ad/adapter_config\.json: key 'base\.weights': (\S*/)?{reason}"):
            load_adapter(ad)
    with pytest.raises(ValueError, match=r"ck/model\.safetensors: is a FIFO \(named pipe\), not a weights file"):
        create_model("vit_tiny_patch16_224", pretrained=str(ck), img_size=32, depth=1, embed_dim=32, num_heads=2)


@pytest.mark.parametrize("depth, reason", [
    (10**9, r"ad/adapter_config\.json: base\.model_args\.depth is 1000000000, more than the [\d,]+ elements"),
    (100_000, r"model\.safetensors: base\.model_args in adapter_config\.json do not fit the weights: the config "
              r"builds more than"),
])
def test_adapter_base_model_args_are_sized_against_the_base_weights_before_building(tmp_path, depth, reason):
    """breaker33 B9, adapter side: base.model_args from adapter_config.json built the base for real (depth 1e9:
    memory without bound); now sized against the checksum-verified base weights first."""
    import json

    from medvit.models import create_model, save_checkpoint
    from medvit.models.checkpoint import sha256_file
    from medvit.peft.checkpoint import FORMAT, AdapterError, load_adapter

    args = {"img_size": 32, "patch_size": 16, "depth": 1, "embed_dim": 32, "num_heads": 2}
    ck = save_checkpoint(create_model("vit_tiny_patch16_224", **args), tmp_path / "base")
    w = ck / "model.safetensors"
    base = {"architecture": "vit_tiny_patch16_224", "weights": str(w), "weights_sha256": sha256_file(w),
            "model_args": {**args, "depth": depth}}
    ad = tmp_path / "ad"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"format": FORMAT, "method": "lora", "method_config": {},
                                                        "base": base, "tensors": {}}))
    with pytest.raises(AdapterError, match=reason):
        load_adapter(ad)


def test_viewer_feedback_with_a_nan_probability_still_loads(tmp_path):
    """The strict reader must not lock a reader out of saved verdicts: the viewer writes entries with json.dumps,
    which writes NaN for a NaN probability (a model with NaN weights)."""
    from apps.viewer import feedback

    entry = {"instance": "1.2.3", "frame": 0, "model": {"sha256": "x"},
             "findings": [{"finding": "A", "probability": float("nan"), "verdict": None}]}
    path = feedback.save(tmp_path, "study", entry)
    assert "NaN" in path.read_text()
    feedback.save(tmp_path, "study", dict(entry, frame=1))  # reads the file back, adds the second entry
    assert [e["frame"] for e in feedback.load(path)["entries"]] == [0, 1]
