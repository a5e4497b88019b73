"""benchmarks/cpu_timing.py: a timed call during which other processes kept the machine busy is retaken; summaries
and paired ratios use the clean samples. Clocks are injected (no wall-clock assertions)."""

from __future__ import annotations

import pytest

from tests.bench.loader import load_benchmark


@pytest.fixture(scope="module")
def ct():
    return load_benchmark("cpu_timing", "cpu_timing")


class FakeMachine:
    """Each call of fn advances the wall clock by ``wall``, this process's CPU by ``own`` and the machine's busy
    counter by own + foreign·wall, with ``foreign`` taken from a script (one value per call)."""

    def __init__(self, foreign: list[float], wall: float = 1.0, own: float = 2.0):
        self.script, self.wall, self.own = list(foreign), wall, own
        self.t = self.cpu_s = self.busy_s = 0.0
        self.calls, self.slept = 0, []

    def fn(self):
        f = self.script[self.calls]
        self.calls += 1
        self.t += self.wall
        self.cpu_s += self.own
        self.busy_s += self.own + f * self.wall

    def kw(self):
        return dict(busy=lambda: self.busy_s, cpu=lambda: self.cpu_s, clock=lambda: self.t, sleep=self.slept.append)


def test_disturbed_calls_are_retaken_until_one_is_clean(ct):
    m = FakeMachine([1.0, 0.6, 0.05])
    s = ct.timed_call(m.fn, max_foreign=0.15, tries=4, pause_s=0.5, **m.kw())
    assert (m.calls, s.tries, s.clean) == (3, 3, True)
    assert s.foreign_cores == pytest.approx(0.05)
    assert s.own_cpu_s == pytest.approx(2.0) and s.wall_s == pytest.approx(1.0)
    assert m.slept == [0.5, 1.0]  # doubling pauses between tries, none after the clean one


def test_after_all_tries_the_least_disturbed_call_is_kept_and_flagged(ct):
    m = FakeMachine([0.9, 0.4, 0.7])
    s = ct.timed_call(m.fn, max_foreign=0.15, tries=3, **m.kw())
    assert m.calls == 3 and not s.clean and s.tries == 3
    assert s.foreign_cores == pytest.approx(0.4)
    with pytest.raises(ValueError, match="tries"):
        ct.timed_call(m.fn, tries=0, **m.kw())


def test_summary_and_paired_ratio_use_clean_samples_only(ct):
    S = ct.Sample
    a = [S(1.0, 2.0, 0.0, True, 1), S(8.0, 2.0, 1.0, False, 4), S(2.0, 2.0, 0.1, True, 1)]
    b = [S(2.0, 2.0, 0.0, True, 1), S(2.0, 2.0, 0.0, True, 1), S(2.0, 2.0, 0.0, True, 1)]
    sm = ct.summarize(a, items_per_call=32)
    assert sm["per_s"] == pytest.approx(24.0)  # median of 32/1 and 32/2; the disturbed 32/8 is left out
    assert (sm["clean"], sm["n"], sm["min_per_s"], sm["max_per_s"]) == (2, 3, 16.0, 32.0)
    assert sm["foreign_cores_max"] == 1.0
    r, used = ct.paired_ratio(a, b, 32, 32)
    assert used == [2.0, 1.0] and r == pytest.approx(1.5)  # round 1 (a disturbed) not paired
    none_clean = [S(4.0, 1.0, 1.0, False, 4)]
    assert ct.summarize(none_clean, 8)["per_s"] == 2.0  # falls back to all samples, counted as 0 clean


def test_reps_fill_the_minimum_sample_time(ct):
    assert ct.reps_for(0.12, 0.5) == 5
    assert ct.reps_for(2.0, 0.5) == 1
    assert ct.reps_for(0.0001, 0.5, max_reps=50) == 50
    assert ct.reps_for(0.0, 0.5, max_reps=7) == 7


def test_the_real_counters_move_forward(ct):
    b0, c0 = ct.machine_busy_s(), ct.own_cpu_s()
    x = sum(i * i for i in range(200_000))  # some CPU work of this process
    assert x > 0
    assert ct.machine_busy_s() >= b0 and ct.own_cpu_s() > c0
