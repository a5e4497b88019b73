"""CPU timing that knows what else ran: every timed call records how much CPU the rest of the machine used meanwhile,
and a call that shared the machine is repeated (up to ``tries`` times) instead of being averaged in.

Why: on a small shared machine with as many torch threads as cores, ONE foreign runnable process (a test run, a job
that is ending) slows an eager forward 5-8× — each OpenMP parallel region waits for its descheduled thread — while
an Inductor-compiled graph (fewer, fused regions) slows less. Medians over rounds then mix a fast and a slow machine
state and the same model reads 260 or 33 images/s depending on when it ran (benchmarks/results/compression.md,
session 31). Probe (ViT-S/16 fp32, batch 32, 64 px, this machine, 1.7 foreign cores busy): 1 thread 37 images/s,
2 threads 5-18 images/s; quiet machine, 2 threads: 260.

Foreign CPU of a call = (non-idle jiffies of all CPUs in ``/proc/stat``) / CLK_TCK − (this process's CPU time + its
waited-for children's), over the call's wall time, in cores. The jiffy resolution is 1/CLK_TCK (10 ms): make each
timed call last ≥ 0.5 s (``reps_for``) so that 0.1 core is resolved.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


def machine_busy_s() -> float:
    """Non-idle CPU seconds of the whole machine since boot (user+nice+system+irq+softirq+steal), from
    ``/proc/stat``. Raises ``OSError`` where there is no /proc/stat (not Linux)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait; guest is inside user


def own_cpu_s() -> float:
    """CPU seconds of this process (all threads) plus its terminated, waited-for children (subprocess runs)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


@dataclass
class Sample:
    """One accepted (or, after ``tries``, the least disturbed) timed call."""

    wall_s: float  # wall time of the call (seconds)
    own_cpu_s: float  # CPU seconds of this process (+ children) during it
    foreign_cores: float  # average number of cores other processes kept busy during it
    clean: bool  # foreign_cores <= the limit
    tries: int  # calls made to get this sample (1 = the first was clean)

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def timed_call(fn: Callable[[], object], max_foreign: float = 0.15, tries: int = 4, pause_s: float = 1.0,
               busy: Callable[[], float] = machine_busy_s, cpu: Callable[[], float] = own_cpu_s,
               clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep) -> Sample:
    """Run ``fn()`` until one call ran while other processes used at most ``max_foreign`` cores (``tries`` calls at
    most; pauses of ``pause_s``, doubling, between them so that a burst passes); returns that call's
    :class:`Sample`, else the least disturbed call's with ``clean=False``."""
    if tries < 1:
        raise ValueError(f"tries must be >= 1, got {tries}")
    best: Sample | None = None
    for k in range(1, tries + 1):
        b0, c0, t0 = busy(), cpu(), clock()
        fn()
        wall, own = clock() - t0, cpu() - c0
        foreign = max(0.0, (busy() - b0 - own) / max(wall, 1e-9))
        s = Sample(wall, own, foreign, foreign <= max_foreign, k)
        if s.clean:
            return s
        if best is None or s.foreign_cores < best.foreign_cores:
            best = s
        if k < tries:
            sleep(pause_s * 2 ** (k - 1))
    assert best is not None
    best.tries = tries
    return best


def reps_for(seconds_per_call: float, min_s: float = 0.5, max_reps: int = 50) -> int:
    """Calls of a ``seconds_per_call`` function that make one timed sample last ≥ ``min_s`` (1..max_reps)."""
    if not seconds_per_call > 0:
        return max_reps
    return max(1, min(max_reps, math.ceil(min_s / seconds_per_call)))


def summarize(samples: list[Sample], items_per_call: float) -> dict:
    """Items/s from the clean samples (all samples when none is clean): median, min, max, and how many were clean."""
    use = [s for s in samples if s.clean] or samples
    rates = [items_per_call / s.wall_s for s in use]
    return {"per_s": statistics.median(rates), "min_per_s": min(rates), "max_per_s": max(rates),
            "clean": sum(s.clean for s in samples), "n": len(samples),
            "foreign_cores_max": max(s.foreign_cores for s in samples)}


def paired_ratio(a: list[Sample], b: list[Sample], items_a: float, items_b: float) -> tuple[float, list[float]]:
    """Median of the per-round speed ratios (a items/s ÷ b items/s), over rounds where both samples are clean (all
    rounds when fewer than one), and the ratios used."""
    idx = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x.clean and y.clean] or list(range(len(a)))
    r = [(items_a / a[i].wall_s) / (items_b / b[i].wall_s) for i in idx]
    return statistics.median(r), r
