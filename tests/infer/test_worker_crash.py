"""A decoder crash that kills a worker process costs only that file (error row), never the run."""

from __future__ import annotations

import csv
import os
import sys

import pytest

from medvit.infer import EXIT_SOME_FAILED, InferConfig, run_inference
from medvit.infer.decode import decode_in_worker
from tests.infer.helpers import make_model, make_studies


def crashing_decode(path: str):
    """Worker entry point that dies like a segfaulting C decoder on one particular file."""
    if path.endswith("img1.dcm") and "patient1" in path:
        os._exit(139)
    return decode_in_worker(path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on fork-started workers")
def test_worker_death_is_isolated_to_one_file(tmp_path, monkeypatch):
    import medvit.infer.runner as runner

    model = make_model(tmp_path / "model")
    make_studies(tmp_path / "in", n_studies=3, per_study=2)
    monkeypatch.setattr(runner, "decode_in_worker", crashing_decode)
    res = run_inference(InferConfig(str(model), str(tmp_path / "in"), str(tmp_path / "out"), batch_size=2,
                                    workers=2, progress=False))
    assert res.exit_code == EXIT_SOME_FAILED
    assert res.counts["predicted"] == 5 and res.counts["error"] == 1
    with open(tmp_path / "out" / "errors.csv", newline="") as f:
        errors = list(csv.DictReader(f))
    assert [e["file"] for e in errors] == ["patient1/study1/img1.dcm"]
    assert "worker process died" in errors[0]["reason"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on fork-started workers")
def test_decode_workers_die_on_sigterm_even_when_the_parent_turns_it_into_an_exception():
    """`medvit infer` makes SIGTERM raise SystemExit in its own process; forked decoding workers inherited that
    handler, so the pool's SIGTERM to surviving workers after a crash became an exception that blocked on the
    dirty result queue and hung the run. Workers must take SIGTERM's default action."""
    import multiprocessing as mp
    import signal
    import types
    from concurrent.futures import ProcessPoolExecutor

    from medvit.infer.decode import init_worker

    def _stop(signum, frame):
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, _stop)
    try:
        spec = types.SimpleNamespace(parent_pid=os.getpid(), worker_memory_bytes=None, stderr_file=None)
        with ProcessPoolExecutor(1, mp_context=mp.get_context("fork"), initializer=init_worker,
                                 initargs=(spec,)) as ex:
            assert ex.submit(signal.getsignal, signal.SIGTERM).result() == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, old)
