"""breaker34 B4 B5 B6 B8: a symbolic-link loop (or a NUL byte) given as OUTPUT / INPUT, as a viewer folder or root,
as the de-identification key or inside INPUT is named with the reason (one wording: io.safe_write.resolve_path /
io.errors.file_problem) instead of a RuntimeError traceback, a RecursionError or "unreadable entry (OSError)"."""

from __future__ import annotations

import pytest

from apps.viewer import access
from medvit.cli.main import main
from medvit.infer import InferConfig
from medvit.infer.walk import WalkIssue, walk_inputs
from medvit.io.deidentify import load_or_create_key


@pytest.fixture()
def loops(tmp_path):
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    (tmp_path / "in").mkdir()
    return tmp_path


@pytest.mark.parametrize("out", ["l1", "l1/sub"])
def test_infer_output_link_loop_is_a_named_refusal(loops, out, capsys):
    with pytest.raises(ValueError, match=rf"^cannot resolve output .*/{out}: symbolic-link loop$"):
        InferConfig("model", str(loops / "in"), str(loops / out))
    assert main(["infer", "-m", str(loops / "model"), "-i", str(loops / "in"), "-o", str(loops / out)]) == 2
    assert "cannot resolve output" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^cannot resolve output .*o\\x00: contains a NUL byte$"):
        InferConfig("model", str(loops / "in"), str(loops / "o\x00"))


def test_deid_key_problems_name_the_key_and_the_failing_side(loops):
    (loops / "adir").mkdir()
    with pytest.raises(ValueError, match=r"^de-identification key .*adir is a directory, not a key file"):
        load_or_create_key(loops / "adir")  # was a RecursionError (O_EXCL on an existing folder, retried)
    with pytest.raises(ValueError, match=r"^de-identification key .*l1 is a symbolic-link loop, not a key file"):
        load_or_create_key(loops / "l1")
    with pytest.raises(ValueError, match=r"^cannot resolve de-identification key \(--deid-key\) .*l1: "
                                         r"symbolic-link loop$"):
        load_or_create_key(loops / "l1", forbidden=[loops / "in"], what="de-identification key (--deid-key)")
    # the forbidden folder is the loop: the key is not blamed for it
    with pytest.raises(ValueError, match=r"^cannot resolve .*l1: symbolic-link loop \(checking whether "
                                         r"de-identification key .*k2\.key lies inside it\)$"):
        load_or_create_key(loops / "keys" / "k2.key", forbidden=[loops / "l1"])
    assert not (loops / "keys").exists()
    assert len(load_or_create_key(loops / "keys" / "k.key", forbidden=[loops / "in"])) == 32


def test_viewer_folder_and_roots_with_a_loop_are_named(loops):
    roots = access.allowed_roots([loops], {})
    with pytest.raises(ValueError, match=r"^cannot resolve folder .*l1: symbolic-link loop$"):
        access.check_folder(loops / "l1", roots)
    with pytest.raises(ValueError, match=r"^cannot resolve folder .*\\x00: contains a NUL byte$"):
        access.check_folder(f"{loops}/\x00", roots)
    with pytest.raises(ValueError, match=r"^cannot resolve folder ~no_such_user_fixio34/x: its ~ names no home"):
        access.check_folder("~no_such_user_fixio34/x", roots)
    with pytest.raises(ValueError, match=r"^cannot resolve MEDVIT_VIEWER_ROOTS entry .*l1: symbolic-link loop$"):
        access.allowed_roots([loops / "in"], {access.ENV_ROOTS: str(loops / "l1")})
    assert access.check_folder(loops / "in", roots) == (loops / "in").resolve()


def test_walk_reports_input_link_loops_as_such(loops):
    inp = loops / "in"
    (inp / "a").symlink_to(inp / "b")
    (inp / "b").symlink_to(inp / "a")
    (inp / "self").symlink_to("self")
    for follow in (False, True):
        got = list(walk_inputs(inp.resolve(), follow_links=follow))
        assert got == [WalkIssue(r, "skipped", "is a symbolic-link loop, not a regular file")
                       for r in ("a", "b", "self")]
