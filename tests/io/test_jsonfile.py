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
    with pytest.raises(FileNotFoundError, match=r"not found$"):
        read_json(tmp_path)  # a folder is not a file


def test_domain_error_type_and_any_top_level():
    class MyError(ValueError):
        pass

    with pytest.raises(MyError, match=r"<string>: not valid JSON"):
        parse_json("[1,", "<string>", error=MyError)
    assert parse_json("[1]", "s", expect=None) == [1]
    with pytest.raises(MyError, match=r"s: format None is not 'f/1'"):
        parse_json("[1]", "s", error=MyError, expect=None, format_id="f/1")


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
