"""benchmarks/compression.py `e2e_summary`: the end-to-end int8 gain is separable only when every clean pair points
the same way and the t-test of log gains says so; disturbed pairs are left out; whole run and after-first-batch
throughput are judged separately."""

from __future__ import annotations

import pytest

from tests.bench.loader import load_benchmark


@pytest.fixture(scope="module")
def cb():
    return load_benchmark("compression", "compression_bench")


def _pair(whole: float, steady: float, clean: bool = True) -> dict:
    run = {"img_s_run": 100.0, "img_s_after_first_batch": 80.0, "first_batch_s": 0.5, "predict_s": 2.0}
    return {"fp32": dict(run), "int8": {**run, "img_s_run": 100.0 * whole, "img_s_after_first_batch": 80.0 * steady,
                                        "first_batch_s": 1.4}, "gain": whole, "gain_after_first_batch": steady,
            "clean": clean}


def test_consistent_steady_gain_is_separable_a_mixed_whole_run_is_not(cb):
    pairs = [_pair(1.09, 2.19), _pair(1.22, 2.31), _pair(1.33, 2.50), _pair(1.27, 2.30), _pair(0.88, 1.94),
             _pair(0.5, 0.5, clean=False)]  # a disturbed pair pointing the other way: left out
    e = cb.e2e_summary(pairs, 256, 256, "full", "m")
    assert e["clean_pairs"] == 5
    assert not e["whole_run"]["separable"] and e["whole_run"]["min"] == pytest.approx(0.88)
    st = e["after_first_batch"]
    assert st["separable"] and st["n"] == 5 and st["t_test_p"] < 1e-3
    assert st["median"] == pytest.approx(2.30) and st["sign_test_p"] == pytest.approx(2 * 0.5 ** 5)
    assert e["median_img_s_after_first_batch"]["int8"] == pytest.approx(80.0 * 2.30)


def test_noisy_gains_around_one_are_not_separable(cb):
    pairs = [_pair(g, g) for g in (1.3, 1.1, 1.2, 1.05, 1.4)] + [_pair(1.6, 1.6)]
    assert cb.e2e_summary(pairs, 8, 64, "full", "m")["whole_run"]["separable"]  # all one way, tight
    noisy = [_pair(g, g) for g in (1.5, 0.8, 1.3, 0.9)]
    e = cb.e2e_summary(noisy, 8, 64, "full", "m")
    assert not e["whole_run"]["separable"] and e["whole_run"]["sign_test_p"] == 1.0


def test_carried_e2e_keeps_the_settings_it_ran_under(cb):
    prev = {"meta": {"threads_time": 1, "max_foreign": 1.15, "command_time": "time --threads 1",
                     "commands_e2e": ["e2e --threads 1"], "date_time": "03:55 UTC"},
            "e2e": {"pairs": [_pair(1.2, 2.3)], "calls": ["03:55 UTC", "03:59 UTC"]}}
    e = cb.carried_e2e(prev)
    assert e["threads"] == 1 and e["max_foreign"] == 1.15 and e["calls"] == ["03:55 UTC", "03:59 UTC"]
    assert e["commands"] == ["time --threads 1", "e2e --threads 1"]
    assert "threads" not in prev["e2e"]  # the earlier json is not changed
    with pytest.raises(ValueError, match="e2e.pairs"):
        cb.carried_e2e({"meta": prev["meta"], "e2e": {}})
