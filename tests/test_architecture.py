"""The house's layer contracts (``.importlinter``) hold on this tree, and the checker really catches breaches.

``make lint`` runs ``lint-imports``; these tests run the same checker so that ``pytest`` alone also guards the
layering, and prove on a copy of the tree that a lower layer importing a higher one (or a new cycle) fails it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} missing: install the dev extra (`make venv`)")
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(cwd / ".importlinter")], cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)}, capture_output=True, text=True,
                          timeout=120)


def _copy_tree(dst: Path) -> None:
    shutil.copy(ROOT / ".importlinter", dst / ".importlinter")
    for pkg in ("medvit", "apps"):
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def test_layer_contracts_hold_on_this_tree():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_checker_fails_when_a_lower_layer_imports_a_higher_one_or_a_cycle_appears(tmp_path):
    _copy_tree(tmp_path)
    clean = _lint(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr  # the copy itself is clean
    with open(tmp_path / "medvit" / "io" / "errors.py", "a") as f:  # io (lowest room) reaching up to the CLI
        f.write("\nfrom medvit.cli import main as _upward  # noqa: E402,F401\n")
    with open(tmp_path / "medvit" / "models" / "contract.py", "a") as f:  # contract <-> factory cycle
        f.write("\nfrom medvit.models import factory as _cycle  # noqa: E402,F401\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "medvit.io is not allowed to import medvit.cli" in broken.stdout, broken.stdout
    assert "- medvit.io.errors -> medvit.cli" in broken.stdout, broken.stdout
    assert "No cycles are allowed in medvit.models" in broken.stdout, broken.stdout


def test_no_module_imports_its_own_package():
    """A submodule importing its parent package (which imports the submodule) is a cycle the sibling contract
    cannot see: e.g. task modules once imported ``medvit.tasks`` for ``register_task``."""
    graph = grimp.build_graph("medvit", "apps", cache_dir=None)
    upward = sorted(f"{m} -> {i}" for m in graph.modules for i in graph.find_modules_directly_imported_by(m)
                    if m.startswith(i + "."))
    assert upward == []


def test_demo_files_are_found_or_named(tmp_path):
    """The demo's files come from $MEDVIT_PIPELINES, ./pipelines or the source tree; otherwise the error says where
    it looked and how to point medvit at them (an installed package has no source tree next to it)."""
    from medvit import demo

    assert demo.demo_dir({}, tmp_path) == ROOT / "pipelines" / "demo"  # this checkout
    (tmp_path / "p" / "demo").mkdir(parents=True)
    (tmp_path / "p" / "demo" / demo.PIPELINE_NAME).write_text("task: x\n")
    assert demo.pipelines_dir({"MEDVIT_PIPELINES": str(tmp_path / "p")}, tmp_path) == tmp_path / "p"
    assert demo.default_cache({"MEDVIT_DEMO_CACHE": str(tmp_path / "c")}) == tmp_path / "c"
    assert demo.default_cache({}) == ROOT / ".cache" / "medvit-demo"


def test_demo_without_a_source_tree_says_where_it_looked(tmp_path, monkeypatch):
    from medvit import demo

    monkeypatch.setattr(demo, "source_root", lambda: None)
    with pytest.raises(FileNotFoundError, match="MEDVIT_PIPELINES"):
        demo.pipelines_dir({}, tmp_path)
    assert demo.default_cache({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "medvit" / "demo"
