"""review S4 / stop-33 leftover: one containment rule (io.safe_write.resolved_inside) serves the writes (checked_path),
the data folders (data.own.inside, BenchX), the INPUT walk and saved model directories (vlm.paths); the walk's
own FIFO/device check is the shared io.errors one. Before, each kept its own copy and a link loop or a NUL byte gave
a bare RuntimeError / "embedded null byte" that named neither the file nor the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medvit.io.safe_write import UnsafePathError, checked_path


@pytest.fixture()
def tree(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.dcm").write_bytes(b"x")
    (outside / "secret.dcm").write_bytes(b"s")
    (root / "in.dcm").symlink_to(root / "sub" / "a.dcm")
    (root / "out.dcm").symlink_to(outside / "secret.dcm")
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    (tmp_path / "root_link").symlink_to(root, target_is_directory=True)
    return root, outside


def test_resolved_inside_resolves_both_sides(tree):
    from medvit.io.safe_write import resolved_inside

    root, outside = tree
    assert resolved_inside(root, root / "in.dcm") == ((root / "sub" / "a.dcm").resolve(), True)
    assert resolved_inside(root, root / "out.dcm") == ((outside / "secret.dcm").resolve(), False)
    assert not resolved_inside(root, root / "dir_out" / "secret.dcm")[1]  # a folder link on the way
    assert resolved_inside(root, root)[1] and not resolved_inside(root, root / "..")[1]
    assert resolved_inside(root.parent / "root_link", root / "sub" / "a.dcm")[1]  # root reached through a link
    with pytest.raises(ValueError, match=r"^cannot resolve .*root/loop_a/x: symbolic-link loop$"):
        resolved_inside(root, root / "loop_a" / "x")
    with pytest.raises(ValueError, match=r"^cannot resolve 'bad': contains a NUL byte$"):
        resolved_inside(root, str(root / "a\x00b"), shown="'bad'")


def test_resolved_inside_says_which_side_failed_in_printable_text(tree):
    """breaker34 B6/B9: a loop in the root was reported as "cannot resolve PATH under ROOT" (blaming the path), and
    the root / the first path of checked_path's message went out raw (a NUL byte, non-UTF-8 bytes into logs)."""
    from medvit.io.safe_write import resolved_inside

    root, _ = tree
    with pytest.raises(ValueError, match=r"^cannot resolve .*root/loop_a: symbolic-link loop \(checking whether "
                                         r".*root/sub/a\.dcm lies inside it\)$"):
        resolved_inside(root / "loop_a", root / "sub" / "a.dcm")
    with pytest.raises(ValueError, match=r"^cannot resolve .*root\\x00: contains a NUL byte \(checking whether "):
        resolved_inside(str(root) + "\x00", root / "sub" / "a.dcm")
    with pytest.raises(UnsafePathError) as e:
        checked_path(root, str(root) + "/a\x00\udcff")
    assert "\x00" not in str(e.value) and "\udcff" not in str(e.value)
    assert str(e.value).count("a\\x00\\xff") == 2  # both mentions printable


def test_checked_path_refuses_a_link_loop_by_name(tree):
    root, _ = tree
    with pytest.raises(UnsafePathError, match=r"refusing to write .*loop_a/x: cannot resolve .*loop_a/x: "
                                              r"symbolic-link loop"):
        checked_path(root, root / "loop_a" / "x")
    with pytest.raises(UnsafePathError, match=r"refusing to write .*dir_out/new\.txt: it resolves to .*outside"):
        checked_path(root, root / "dir_out" / "new.txt")
    assert checked_path(root, root / "in.dcm") == root / "in.dcm"


@pytest.mark.parametrize("value, msg", [
    ("loop_a/x", r"vlm_config\.json: key 'vision_checkpoint': cannot resolve 'loop_a/x': symbolic-link loop"),
    ("a\x00b", r"vlm_config\.json: key 'vision_checkpoint': cannot resolve .*: contains a NUL byte"),
    ("dir_out", r"vlm_config\.json: key 'vision_checkpoint' is 'dir_out', outside the model directory"),
], ids=["loop", "nul", "link out"])
def test_model_dir_paths_name_the_file_and_key(tree, value, msg):
    from medvit.vlm.paths import inside_model_dir

    root, _ = tree
    with pytest.raises(ValueError, match=msg):
        inside_model_dir(root, value, "vision_checkpoint")
    assert inside_model_dir(root, "sub", "vision_checkpoint") == root / "sub"


def test_input_walk_uses_the_shared_rules(tree):
    """The walk refuses a link out, follows a link inside, and names what a non-regular file is (the shared
    io.errors wording: it said "FIFO, socket or device" for all three)."""
    from medvit.infer.walk import WalkIssue, walk_inputs

    root, _ = tree
    os.mkfifo(root / "sub" / "pipe.dcm")
    got = list(walk_inputs(root.resolve()))
    issues = {i.rel: i for i in got if isinstance(i, WalkIssue)}
    files = {Path(p).relative_to(root.resolve()).as_posix() for p in got if not isinstance(p, WalkIssue)}
    assert files == {"in.dcm", "sub/a.dcm"}
    assert issues["sub/pipe.dcm"].status == "skipped"
    assert issues["sub/pipe.dcm"].reason == "is a FIFO (named pipe), not a regular file"
    assert "outside INPUT" in issues["out.dcm"].reason and "outside INPUT" in issues["dir_out/"].reason
