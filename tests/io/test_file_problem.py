"""breaker33 B7 / B8: a path read from a file that is not a regular file — a directory, a FIFO, a link loop, a
dangling link, a NUL byte — is named for what it is ("is a FIFO (named pipe), not an image file"), with the CSV
line, instead of "image file not found" / "listed images are missing" / a bare "embedded null byte". Nothing here
opens a FIFO (it would block): the checks stat only."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from medvit.io.errors import check_file, file_problem


def _specials(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "ok.png").write_bytes(b"x")
    (tmp_path / "adir").mkdir()
    os.mkfifo(tmp_path / "fifo.png")
    os.symlink("loop.png", tmp_path / "loop.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    return {k: tmp_path / f for k, f in [("ok", "ok.png"), ("dir", "adir"), ("fifo", "fifo.png"),
                                          ("loop", "loop.png"), ("dangling", "dangling.png"), ("none", "nope.png")]}


def test_file_problem_names_what_is_there(tmp_path):
    p = _specials(tmp_path)
    assert file_problem(p["ok"]) is None
    assert file_problem(p["dir"]) == "is a directory"
    assert file_problem(p["fifo"]) == "is a FIFO (named pipe)"
    assert file_problem(p["loop"]) == "is a symbolic-link loop"
    assert file_problem(p["dangling"]) == "is a symbolic link to a missing target"
    assert file_problem(p["none"]) == "not found"
    assert file_problem(str(tmp_path / "a\x00b.png")) == "contains a NUL byte"
    assert file_problem("/dev/null") == "is a device"
    with pytest.raises(FileNotFoundError, match=r"DICOM file not found: .*nope\.png"):
        check_file(p["none"], "DICOM file")
    with pytest.raises(ValueError, match=r"fifo\.png: is a FIFO \(named pipe\), not a DICOM file"):
        check_file(p["fifo"], "DICOM file")


@pytest.mark.parametrize("kind, msg", [("dir", r"adir: is a directory, not an image file"),
                                       ("fifo", r"fifo\.png: is a FIFO \(named pipe\), not an image file"),
                                       ("loop", r"loop\.png: is a symbolic-link loop, not an image file")])
def test_image_readers_name_a_non_file(tmp_path, kind, msg):
    from medvit.data.imageload import read_checked
    from medvit.io import read_image
    from medvit.io.raster import read_raster

    p = _specials(tmp_path)[kind]
    with pytest.raises(ValueError, match=msg):
        read_checked(p)
    if kind != "dir":  # a directory is a DICOM series to read_image
        with pytest.raises(ValueError, match=msg):
            read_image(p)
        with pytest.raises(ValueError, match=msg):
            read_raster(p)
    with pytest.raises(FileNotFoundError, match="image file not found"):
        read_checked(tmp_path / "nope.png")


def _phantom_folder(tmp_path: Path, file_value: str) -> Path:
    from medvit.data.synth import write_synth

    root = tmp_path / "synth"
    write_synth("cxr", 4, root, fmt="png", image_size=32, masks=False)
    os.mkfifo(root / "images" / "fifo.png")
    rows = list(csv.reader(open(root / "labels.csv")))
    rows[1][rows[0].index("file")] = file_value
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


@pytest.mark.parametrize("file_value, err, msg", [
    ("images/a\x00b.png", ValueError, r"labels\.csv line 2 column 'file': image path 'images/a\\x00b\.png' contains "
                                      r"a NUL byte"),
    (".", ValueError, r"labels\.csv line 2 column 'file': \. is a directory, not an image file"),
    ("images", ValueError, r"labels\.csv line 2 column 'file': images is a directory, not an image file"),
    ("images/fifo.png", ValueError, r"labels\.csv line 2 column 'file': images/fifo\.png is a FIFO \(named pipe\)"),
    ("images/gone.png", FileNotFoundError, r"labels\.csv line 2 column 'file': images/gone\.png not found"),
], ids=["nul", "dot", "dir", "fifo", "missing"])
def test_phantom_folder_names_a_listed_file_that_is_not_an_image_file_at_construction(tmp_path, file_value, err,
                                                                                      msg):
    from medvit.data.phantom_datasets import PhantomFolderDataset

    with pytest.raises(err, match=msg):
        PhantomFolderDataset(_phantom_folder(tmp_path, file_value), "all")


@pytest.mark.parametrize("name, msg", [("fifo.png", r"labels\.csv:3: fifo\.png is a FIFO \(named pipe\), not an "
                                                    r"image file"),
                                       ("loop.png", r"labels\.csv:3: loop\.png is a symbolic-link loop"),
                                       ("a\x00.png", r"labels\.csv:3: image path 'a\\x00\.png' contains a NUL byte")])
def test_own_csv_names_a_listed_non_file(tmp_path, name, msg):
    from medvit.data.own import LabelledCSV

    root = tmp_path / "own"
    root.mkdir()
    _specials(root)
    (root / "labels.csv").write_text(f"path,patient,A\nok.png,p1,1\n{name},p2,0\n")
    with pytest.raises(ValueError, match=msg):
        LabelledCSV(root, "all")
