"""``medvit infer --engine ray`` against the local engine, on one local Ray cluster started by this module.

The cluster (2 CPUs, no dashboard, a small object store) is started once by a module fixture and shut down after;
its workers load :mod:`tests.infer.ray_crash_hook`, which kills a worker on chosen files. Synchronisation is by
files and exit codes only: the killed driver kills itself right after its journal holds 4 synced records.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from medvit.infer import EXIT_OK, EXIT_SOME_FAILED, InferConfig, run_inference
from tests.infer.helpers import make_model, make_studies
from tests.infer.ray_crash_hook import rule_file
from tests.ports import refused_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    import ray

    crash_dir = tmp_path_factory.mktemp("ray-crash-rules")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_AUTH_MODE")}
    # workers inherit the raylet's environment: this checkout's medvit and tests, no token set-up on a test box
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved["PYTHONPATH"]]))
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20,
             log_to_driver=False,
             runtime_env={"worker_process_setup_hook": "tests.infer.ray_crash_hook.install",
                          "env_vars": {"MEDVIT_TEST_CRASH_DIR": str(crash_dir)}})
    try:
        yield ray.get_runtime_context().gcs_address, crash_dir
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("ray-model") / "model")


def _rows(p: Path) -> list[dict[str, str]]:
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def assert_same_outputs(a: Path, b: Path, skip_files: set[str] = frozenset()) -> None:
    """Same status/errors rows, same predictions (probabilities within 1e-6), same SR files."""
    for name in ("status.csv", "errors.csv"):
        ra = [r for r in _rows(a / name) if r["file"] not in skip_files]
        rb = [r for r in _rows(b / name) if r["file"] not in skip_files]
        assert ra == rb, name
    pa = [r for r in _rows(a / "predictions.csv") if r["file"] not in skip_files]
    pb = [r for r in _rows(b / "predictions.csv") if r["file"] not in skip_files]
    assert [r["file"] for r in pa] == [r["file"] for r in pb] and pa
    for ra, rb in zip(pa, pb, strict=True):
        assert ra.keys() == rb.keys()
        for k in rb:
            if k.startswith("p_"):  # printed with 6 decimals: adjacent roundings differ by 1e-6
                assert abs(float(ra[k]) - float(rb[k])) <= 1e-6 + 1e-12, (ra["file"], k, ra[k], rb[k])
            elif k not in ("positive_findings", "n_positive"):
                assert ra[k] == rb[k], (ra["file"], k)
    ja = [json.loads(x)["file"] for x in (a / "predictions.jsonl").read_text().splitlines()]
    jb = [json.loads(x)["file"] for x in (b / "predictions.jsonl").read_text().splitlines()]
    assert [f for f in ja if f not in skip_files] == [f for f in jb if f not in skip_files]
    assert sorted(p.name for p in (a / "sr").glob("*.dcm")) == sorted(p.name for p in (b / "sr").glob("*.dcm"))


def test_ray_outputs_equal_the_local_engine_on_a_hostile_folder(tmp_path, ray_cluster, model):
    from medvit.cli.demo_cmd import build_inbox

    inp = tmp_path / "in"
    build_inbox(inp, 6)  # chest phantoms, JPEG 2000 + MONOCHROME1, pydicom's CT/DICOMDIR/RT plan, truncated DX, text
    first = sorted((inp / "site_a").rglob("*.dcm"))[0]
    (inp / "copies").mkdir()
    shutil.copy(first, inp / "copies" / "same_sop.dcm")  # a duplicate SOP Instance UID: a skipped row
    kw = dict(batch_size=4, sr=True, heatmaps=True, precision="fp32", progress=False)
    local = run_inference(InferConfig(str(model), str(inp), str(tmp_path / "local"), workers=1, **kw))
    res = run_inference(InferConfig(str(model), str(inp), str(tmp_path / "ray"), engine="ray", num_workers=2, **kw))
    assert res.exit_code == local.exit_code == EXIT_SOME_FAILED  # the truncated DX
    assert res.counts["predicted"] == local.counts["predicted"] == 6
    assert res.counts["error"] == local.counts["error"] >= 1
    assert any(r["stage"] == "duplicate" for r in _rows(tmp_path / "ray" / "status.csv"))
    heat = {k: sorted(p.relative_to(tmp_path / k).as_posix() for p in (tmp_path / k / "heatmaps").rglob("*")
                      if p.is_file()) for k in ("ray", "local")}
    assert len(heat["ray"]) == 2 * 6 and heat["ray"] == heat["local"]  # a PNG and a Secondary Capture per image
    assert_same_outputs(tmp_path / "ray", tmp_path / "local")
    run = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert run["engine"]["name"] == "ray" and run["engine"]["num_workers"] == 2 and run["engine"]["shards"] >= 3
    assert run["state"] == "finished" and run["exit_code"] == EXIT_SOME_FAILED


def test_a_killed_worker_is_retried_and_a_file_killing_it_twice_is_an_error(tmp_path, ray_cluster, model):
    _, crash_dir = ray_cluster
    inp = tmp_path / "in"
    paths = make_studies(inp, n_studies=3, per_study=2)  # shards of 2: [p0 img0, img1], [p1 ...], [p2 ...]
    once, always = paths[1], paths[4]
    rule_file(crash_dir, once, "once")
    rule_file(crash_dir, always, "always")
    kw = dict(batch_size=2, precision="fp32", progress=False)
    local = run_inference(InferConfig(str(model), str(inp), str(tmp_path / "local"), workers=0, **kw))
    assert local.exit_code == EXIT_OK
    res = run_inference(InferConfig(str(model), str(inp), str(tmp_path / "ray"), engine="ray", num_workers=2, **kw))
    assert res.exit_code == EXIT_SOME_FAILED
    assert res.counts["predicted"] == 5 and res.counts["error"] == 1
    assert (crash_dir / f"{rule_file(crash_dir, once, 'once').stem}.died").is_file()  # it did die once
    bad = always.relative_to(inp).as_posix()
    errors = _rows(tmp_path / "ray" / "errors.csv")
    assert [e["file"] for e in errors] == [bad] and "died twice" in errors[0]["reason"]
    assert "WorkerCrashedError" in errors[0]["reason"]
    assert_same_outputs(tmp_path / "ray", tmp_path / "local", skip_files={bad})
    engine = json.loads((tmp_path / "ray" / "run.json").read_text())["engine"]
    assert engine["files_failed_by_worker_death"] == 1


#: ``medvit infer`` (the driver) that SIGKILLs itself once its journal holds 4 or more synced records; the Ray
#: cluster and its workers live on: the restarted driver must end with the uninterrupted run's outputs.
_DRIVER_KILLED_AFTER_4 = """
import os, signal, sys
from medvit.cli.main import main
from medvit.infer.outputs import Journal
_sync = Journal.sync
def sync(self, *args, **kwargs):
    _sync(self, *args, **kwargs)
    if self.path.read_bytes().count(b"\\n") >= 4:
        os.kill(os.getpid(), signal.SIGKILL)
Journal.sync = sync
sys.exit(main(sys.argv[1:]))
"""


def test_killed_driver_then_resume_equals_the_uninterrupted_local_run(tmp_path, ray_cluster, model):
    address, _ = ray_cluster
    inp = tmp_path / "in"
    make_studies(inp, n_studies=5, per_study=2)
    (inp / "junk.bin").write_bytes(b"\x00" * 300)
    ref = tmp_path / "ref"
    assert run_inference(InferConfig(str(model), str(inp), str(ref), batch_size=2, workers=0, sr=True,
                                     precision="fp32", progress=False)).exit_code == EXIT_OK
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

    def cmd(entry: list[str], *ray: str) -> list[str]:
        return [sys.executable, *entry, "infer", "-m", str(model), "-i", str(inp), "-o", str(out), "--batch-size",
                "2", "--sr", "--quiet", "--precision", "fp32", "--engine", "ray", "--num-workers", "2", *ray]

    # the killed driver joined the test's cluster; the restarted one starts a Ray instance of its own (no --address)
    killed = subprocess.run(cmd(["-c", _DRIVER_KILLED_AFTER_4], "--address", address), env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    journal = out / ".medvit-infer" / "journal.jsonl"
    assert 4 <= journal.read_bytes().count(b"\n") < 11 and not (out / "predictions.csv").exists()
    second = subprocess.run(cmd(["-m", "medvit.cli.main"]), env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == EXIT_OK, second.stderr[-2000:]
    assert "done by an earlier run" in second.stdout
    assert_same_outputs(out, ref)
    recs = [json.loads(x)["file"] for x in journal.read_text().splitlines()]
    assert len(recs) == len(set(recs)) == 11  # each file journaled once over both drivers
    run = json.loads((out / "run.json").read_text())
    assert run["previous_runs"][-1]["state"] == "killed" and run["engine"]["started_cluster"] is True


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_unreachable_address_is_one_clear_error_and_exit_5(tmp_path, capsys, scheme, model):
    from medvit.cli.main import main

    make_studies(tmp_path / "in", n_studies=1, per_study=1)
    with refused_port() as port:  # nothing listens there, and nothing can start to
        address = f"{scheme}127.0.0.1:{port}"
        rc = main(["infer", "-m", str(model), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--quiet",
                   "--engine", "ray", "--address", address])
    err = capsys.readouterr().err
    assert rc == 5
    assert f"Ray cluster at {address} cannot be reached" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_ray_segmentation_outputs_equal_the_local_engine(tmp_path, ray_cluster):
    """A segmentation model's maps come back from the workers; SEG objects and per-label areas as locally."""
    from tests.reading.helpers import make_seg_model

    model = make_seg_model(tmp_path / "model")
    make_studies(tmp_path / "in", n_studies=2, per_study=2)
    kw = dict(batch_size=3, precision="fp32", progress=False)
    local = run_inference(InferConfig(str(model), str(tmp_path / "in"), str(tmp_path / "local"), workers=0, **kw))
    res = run_inference(InferConfig(str(model), str(tmp_path / "in"), str(tmp_path / "ray"), engine="ray",
                                    num_workers=2, **kw))
    assert res.exit_code == local.exit_code == EXIT_OK and res.counts["seg_written"] == local.counts["seg_written"] == 4
    a, b = _rows(tmp_path / "ray" / "predictions.csv"), _rows(tmp_path / "local" / "predictions.csv")
    assert [r["file"] for r in a] == [r["file"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for k in rb:
            if k.startswith("p_"):
                assert abs(float(ra[k]) - float(rb[k])) <= 1e-6 + 1e-12, (ra["file"], k)
            else:  # pixel counts, areas, SEG paths
                assert ra[k] == rb[k], (ra["file"], k)


def test_ray_options_are_checked_before_any_work(tmp_path, monkeypatch, model):
    make_studies(tmp_path / "in", n_studies=1, per_study=1)
    base = dict(model=str(model), input=str(tmp_path / "in"), output=str(tmp_path / "out"), progress=False)
    with pytest.raises(ValueError, match="int8"):
        InferConfig(**base, engine="ray", precision="int8", batch_size=8)
    with pytest.raises(ValueError, match="apply to --engine ray"):
        InferConfig(**base, address="127.0.0.1:6379")
    with pytest.raises(ValueError, match="engine must be local or ray"):
        InferConfig(**base, engine="dask")
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed: the optional extra is named
    with pytest.raises(ValueError, match=r"pip install 'medvit\[ray\]'"):
        run_inference(InferConfig(**base, engine="ray"))
    assert not (tmp_path / "out").exists()
