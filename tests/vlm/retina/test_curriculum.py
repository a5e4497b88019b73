"""Curriculum generation: counts per module, byte-identical per seed, no answer value in the question, yes/no balance,
bad rows skipped with reasons, a user's CSV with a column mapping, the paraphraser's fact check, the CLI."""

import csv
import json
import re
import shutil

import pytest

from medvit.data.synth import write_synth
from medvit.vlm.retina.curriculum import PART1_MODULE, PART2_MODULES, CurriculumConfig, generate_curriculum, iter_qas
from medvit.vlm.retina.guidelines import default_guidelines_dir, load_guidelines
from medvit.vlm.retina.paraphrase import keeps_facts

K2 = {m: 3 + i % 3 for i, m in enumerate(PART2_MODULES)}


@pytest.fixture(scope="module")
def g():
    return load_guidelines(default_guidelines_dir())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("retina")
    write_synth("retina", 48, root, fmt="png", seed=2, image_size=32, masks=False)
    return root


def _cfg(**kw):
    base = dict(splits=[], part1_k=8, part2_k=dict(K2), captions_k=2, seed=0)
    return CurriculumConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def out(data, g, tmp_path_factory):
    o = tmp_path_factory.mktemp("cur")
    generate_curriculum(data, o, _cfg(), g)
    return o


def test_counts_per_module_and_manifest(out):
    man = json.loads((out / "manifest.json").read_text())
    assert man["images"] == {"part1": 48, "part2": 48}
    assert man["counts"][PART1_MODULE] == 48 * 8
    for m, k in K2.items():
        assert man["counts"][m] == 48 * k
        assert sum(r["module"] == m for r in iter_qas(out / "part2.jsonl")) == 48 * k
    assert man["guideline_version"] == "b1.0.0+r1.0.0+s1.0.0" and man["seed"] == 0 and man["skipped"] == []


def test_schema_is_llava_conversations(out):
    for r in list(iter_qas(out / "part1.jsonl"))[:20] + list(iter_qas(out / "part2.jsonl"))[:50]:
        assert r["images"][0].startswith("images/") and len(r["conversations"]) == 2
        (h, a) = r["conversations"]
        assert h["from"] == "human" and h["value"].startswith("<image>\n") and a["from"] == "gpt" and a["value"]


def test_byte_identical_per_seed(data, g, out, tmp_path):
    generate_curriculum(data, tmp_path / "again", _cfg(), g)
    for f in ("part1.jsonl", "part2.jsonl", "captions.jsonl", "manifest.json"):
        assert (tmp_path / "again" / f).read_bytes() == (out / f).read_bytes()
    generate_curriculum(data, tmp_path / "other", _cfg(seed=1), g)
    assert (tmp_path / "other" / "part1.jsonl").read_bytes() != (out / "part1.jsonl").read_bytes()


def _words(text):
    return " " + re.sub(r"[^a-z0-9.()\- ]", " ", text.lower()) + " "


def test_question_never_contains_the_answer_value(out, g):
    n_open = 0
    for f in ("part1.jsonl", "part2.jsonl"):
        for r in iter_qas(out / f):
            q = r["conversations"][0]["value"]
            v = r["value"]
            if r["kind"] == "yesno":
                assert v in ("yes", "no") and not re.search(r"\b(yes|no)\b", q.split("Answer yes or no")[0].lower())
            elif r["kind"] == "choice":
                assert v.lower() in q.lower()  # every option is listed: the question names them all
            elif v:
                n_open += 1
                assert f" {v.lower()} " not in _words(q), (q, v)
    assert n_open > 500


def test_choice_questions_list_all_options(out, g):
    for r in iter_qas(out / "part2.jsonl"):
        if r["kind"] == "choice" and r["attribute"] == "stage":
            q = r["conversations"][0]["value"]
            opts = g.stage_names if r["module"] == "staging_accuracy" else g.stage_options
            assert all(o in q for o in opts)


def test_yes_no_balance(out):
    man = json.loads((out / "manifest.json").read_text())
    for m, frac in man["yes_fraction"].items():
        assert 0.35 <= frac <= 0.65, (m, frac)
    assert set(man["yes_fraction"]) >= {
        PART1_MODULE,
        "advanced_biomarkers_guidelines",
        "staging_introduction_guidelines",
    }


def test_answers_follow_the_guidelines(out, g):
    for r in iter_qas(out / "part2.jsonl"):
        if r["module"] == "staging_accuracy":
            assert r["value"] in g.stage_names
            assert r["conversations"][1]["value"].lower().startswith(r["value"].lower())
        if r["module"] == "referral_reasoning_guidelines":
            assert f"Referral: {r['value']}" in r["conversations"][1]["value"]
        if r["module"] == "staging_accuracy_guidelines":
            assert "fluid" in r["conversations"][1]["value"]  # the fluid rule is always stated


def _edited_copy(data, tmp_path, edits):
    """A copy of the phantom data root whose labels.csv has ``edits`` {row index: {column: value}} applied."""
    root = tmp_path / "d"
    shutil.copytree(data, root)
    rows = list(csv.DictReader(open(root / "labels.csv")))
    for i, kv in edits.items():
        rows[i].update(kv)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_bad_rows_skipped_with_reasons(data, g, tmp_path):
    root = _edited_copy(data, tmp_path, {0: {"sex": "X"}, 1: {"file": "../../etc/passwd"},
                                         2: {"stage_name": "very late"}, 3: {"report_file": "reports/missing.txt"}})
    generate_curriculum(root, tmp_path / "o", _cfg(), g)
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    reasons = {s["line"]: s["reason"] for s in man["skipped"]}
    assert set(reasons) == {2, 3, 4, 5}
    assert "sex 'X'" in reasons[2] and "relative path inside the data root" in reasons[3]
    assert "very late" in reasons[4] and "not found" in reasons[5]
    assert man["images"]["part1"] == 44


def test_files_linked_outside_the_data_root_are_refused(data, g, tmp_path):
    """A report_file value was checked lexically only: a report linked to a file outside the data root was read
    into the curriculum (the image had the link check; both now share one)."""
    root = _edited_copy(data, tmp_path, {})
    rows = list(csv.DictReader(open(root / "labels.csv")))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET-OUTSIDE-REPORT")
    shutil.copy(root / rows[1]["file"], outside / "scan.png")
    (root / rows[0]["report_file"]).unlink()
    (root / rows[0]["report_file"]).symlink_to(outside / "secret.txt")
    (root / rows[1]["file"]).unlink()
    (root / rows[1]["file"]).symlink_to(outside / "scan.png")
    generate_curriculum(root, tmp_path / "o", _cfg(), g)
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    reasons = {s["line"]: s["reason"] for s in man["skipped"]}
    assert set(reasons) == {2, 3}
    assert f"report file {rows[0]['report_file']} is a symbolic link leading outside the data root" in reasons[2]
    assert f"image file {rows[1]['file']} is a symbolic link leading outside the data root" in reasons[3]
    assert "SECRET-OUTSIDE-REPORT" not in "".join(f.read_text() for f in (tmp_path / "o").glob("*.jsonl"))


def test_user_csv_with_column_mapping_and_tags(g, tmp_path):
    import numpy as np
    from PIL import Image

    (tmp_path / "scans").mkdir()
    for s in ("s1", "s2"):  # listed images must exist (rows with missing files are skipped)
        Image.fromarray(np.full((8, 8), 90, np.uint8)).save(tmp_path / "scans" / f"{s}.png")
    with open(tmp_path / "clinic.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["ScanID", "Path", "Sex", "CurrentAge", "VALogMAR", "AMDStageGroup", "EyePosition", "Tags", "Report"]
        )
        w.writerow(
            [
                "s1",
                "scans/s1.png",
                "Female",
                "81",
                "0.4",
                "Late wet",
                "Right",
                "SRF;drusen",
                "FINDINGS: Subretinal fluid over large drusen (200 µm). No intraretinal fluid.",
            ]
        )
        w.writerow(
            [
                "s2",
                "scans/s2.png",
                "M",
                "66",
                "0.1",
                "Early",
                "L",
                "drusen",
                "FINDINGS: Several medium drusen. No fluid.",
            ]
        )
    cfg = _cfg(
        table="clinic.csv",
        biomarker_columns={},
        tags_column="Tags",
        columns={
            "image_id": "ScanID",
            "image": "Path",
            "sex": "Sex",
            "age": "CurrentAge",
            "va_logmar": "VALogMAR",
            "stage": "AMDStageGroup",
            "eye": "EyePosition",
            "report": "Report",
        },
        stage_values={"Late wet": "late wet (active)", "Early": "early"},
        part1_k=12,
    )
    generate_curriculum(tmp_path, tmp_path / "o", cfg, g)
    p1 = [r for r in iter_qas(tmp_path / "o" / "part1.jsonl") if r["images"] == ["scans/s1.png"]]
    assert len(p1) == 12
    assert {r["value"] for r in p1 if r["attribute"] == "sex"} <= {"female", "yes", "no"}
    p2 = [r for r in iter_qas(tmp_path / "o" / "part2.jsonl") if r["module"] == "staging_accuracy"]
    assert {r["images"][0]: r["value"] for r in p2} == {"scans/s1.png": "late wet (active)", "scans/s2.png": "early"}
    with pytest.raises(ValueError, match="mapped columns not in the header.*sex -> Gender"):
        generate_curriculum(
            tmp_path,
            tmp_path / "o2",
            _cfg(
                table="clinic.csv",
                biomarker_columns={},
                columns={"image_id": "ScanID", "image": "Path", "sex": "Gender"},
            ),
            g,
        )


def test_unknown_module_and_missing_table(data, g, tmp_path):
    with pytest.raises(ValueError, match="unknown module"):
        generate_curriculum(data, tmp_path, _cfg(part2_k={"staging_acuracy": 3}), g)
    with pytest.raises(FileNotFoundError, match="curriculum table not found"):
        generate_curriculum(tmp_path, tmp_path / "o", _cfg(), g)


@pytest.mark.parametrize(
    "orig,new,value,ok",
    [
        ("The patient is 72 years old.", "This patient's age is 72 years.", "72", True),
        ("The patient is 72 years old.", "The patient is 27 years old.", "72", False),
        ("No, there is no subretinal fluid.", "Subretinal fluid is seen.", "no", False),
        ("This is the left eye (OS).", "This is the right eye.", "left", False),
        ("The stage is late dry.", "", "late dry", False),
        ("The AMD stage is intermediate.", "Intermediate AMD.", "intermediate", True),
    ],
)
def test_paraphrase_fact_check(orig, new, value, ok):
    assert keeps_facts(orig, new, value) is ok


def test_paraphraser_rewrites_only_fact_preserving_answers(data, g, tmp_path):
    def para(answers):  # a deterministic stand-in for an LM: one faithful and one unfaithful rewrite style
        return [
            a.replace("The patient is", "This patient is") if i % 2 == 0 else a.replace("0", "9")
            for i, a in enumerate(answers)
        ]

    generate_curriculum(data, tmp_path / "p", _cfg(paraphrase_fraction=0.5), g, paraphrase=para)
    man = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert 0 < man["paraphrase"]["accepted"] < man["paraphrase"]["offered"]


def test_cli_generate(data, tmp_path, capsys):
    from medvit.cli.main import main

    rc = main(
        [
            "curriculum",
            "generate",
            str(data),
            "-o",
            str(tmp_path / "c"),
            "--set",
            "part1_k=2",
            "--set",
            "splits=[train]",
            "--set",
            "part2_fraction=0.5",
        ]
    )
    assert rc == 0 and "pairs" in capsys.readouterr().out
    man = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert man["counts"][PART1_MODULE] == 2 * man["images"]["part1"] and man["images"]["part2"] < man["images"]["part1"]
    assert main(["curriculum", "generate", str(data), "-o", str(tmp_path / "c"), "--set", "part1_kk=2"]) == 2


def test_missing_image_and_unknown_split_are_skipped_and_listed(data, g, tmp_path):
    """breaker F6: a row whose image file does not exist went into the JSONL; a split typo dropped a row silently."""
    root = _edited_copy(data, tmp_path, {0: {"file": "images/does_not_exist.png"}, 1: {"split": "bogus"},
                                         2: {"file": "empty.png"}})
    (root / "empty.png").write_bytes(b"")
    res = generate_curriculum(root, tmp_path / "o", _cfg(splits=["train", "val", "test"]), g)
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    reasons = {s["line"]: s["reason"] for s in man["skipped"]}
    assert set(reasons) == {2, 3, 4}
    assert "does_not_exist.png not found" in reasons[2] and "split 'bogus'" in reasons[3] and "empty" in reasons[4]
    text = "".join(p.read_text() for p in (tmp_path / "o").glob("*.jsonl"))
    assert "does_not_exist" not in text and "empty.png" not in text
    assert man["images"]["part1"] == 45 and res is not None
    with pytest.raises(ValueError, match="part1_k"):
        _cfg(part1_k=-3)


def test_report_and_image_problems_are_named(data, g, tmp_path):
    """breaker34 B7: a report that was a FIFO, a directory, a link loop or a link out to a device was "not found
    under the data root", and a non-UTF-8 report gave a codec message naming no file. The rows are still skipped,
    nothing is opened (a FIFO is never waited on); the reasons now say what is there (io.errors.file_problem)."""
    import os

    root = _edited_copy(data, tmp_path, {})
    rows = list(csv.DictReader(open(root / "labels.csv")))

    def rep(i):
        return root / rows[i]["report_file"]

    rep(0).unlink()
    os.mkfifo(rep(0))
    rep(1).unlink()
    rep(1).symlink_to(rep(1).name)  # a loop onto itself
    rep(2).unlink()
    rep(2).mkdir()
    rep(3).write_bytes(b"Drusen \xff\xfe present")
    rep(4).unlink()
    rep(4).symlink_to("/dev/null")
    (root / rows[5]["file"]).unlink()
    os.mkfifo(root / rows[5]["file"])
    generate_curriculum(root, tmp_path / "o", _cfg(), g)
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    reasons = {s["line"]: s["reason"] for s in man["skipped"]}
    assert reasons == {
        2: f"report file {rows[0]['report_file']} is a FIFO (named pipe)",
        3: f"cannot resolve report file {rows[1]['report_file']}: symbolic-link loop",
        4: f"report file {rows[2]['report_file']} is a directory",
        5: f"report file {rows[3]['report_file']} is not UTF-8 text (invalid start byte at byte 7)",
        6: f"report file {rows[4]['report_file']} is a symbolic link leading outside the data root (refused)",
        7: f"image file {rows[5]['file']} is a FIFO (named pipe)",
    }
