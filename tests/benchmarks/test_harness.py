"""The benchmark driver: ranges over processes, paired ratios, targets, and run_all's table."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def harness():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _harness
        yield _harness
    finally:
        sys.path.remove(str(BENCHMARKS))


def _run(times_a: list[float], times_b: list[float], ratio: float) -> dict:
    return {"threads": 2, "loadavg_start": [0.1], "loadavg_end": [0.2], "notes": None, "derived": {"x": ratio},
            "times": {"a": {"wall": times_a, "cpu": times_a}, "b": {"wall": times_b, "cpu": times_b}},
            "ratios": {"a / b": {"wall": ratio, "cpu": ratio}}}


def test_figures_are_medians_with_min_max_over_processes(harness):
    bench = harness.Bench("t", "title line\nmore", ratios=[harness.Ratio("a / b", "a", "b", 0.8)])
    args = argparse.Namespace(iters=3, warmup=1, quick=False, threads=2)
    runs = [_run([1.0, 2.0, 3.0], [4.0, 4.0, 4.0], 0.5), _run([5.0, 6.0, 7.0], [1.0, 1.0, 1.0], 0.9),
            _run([2.0, 2.0, 2.0], [2.0, 2.0, 2.0], 0.7)]
    record = harness._aggregate(bench, args, runs)
    wall = record["variants"]["a"]["wall_ms"]
    assert (wall["median"], wall["min"], wall["max"]) == (2000.0, 2000.0, 6000.0)  # per-process medians 2, 6, 2 s
    ratio = record["ratios"]["a / b"]
    assert (ratio["wall"]["median"], ratio["wall"]["min"], ratio["wall"]["max"]) == (0.7, 0.5, 0.9)
    assert ratio["met"] is True and ratio["target"] == 0.8
    assert record["derived"]["x"]["runs"] == [0.5, 0.9, 0.7] and record["invocations"] == 3
    assert record["title"] == "title line" and record["threads"] == 2 and record["cpu_model"]


def test_paired_iterations_rotate_the_order(harness):
    calls: list[str] = []
    variants = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    times = harness._paired_times(variants, iters=3, warmup=0)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(t["wall"]) == 3 and len(t["cpu"]) == 3 for t in times.values())


def test_run_all_quick_writes_the_table(tmp_path):
    """One tiny benchmark through run_all: separate processes, a markdown and a JSON table."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--only", "inference_mode",
                           "--threads", "1", "--output-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "latest.json").read_text())
    bench = record["benchmarks"][0]
    assert record["meta"]["threads"] == 1 and record["meta"]["quick"] and record["meta"]["cpu_model"]
    assert bench["invocations"] == 2 and bench["threads"] == 1 and len(bench["loadavg_per_run"]) == 2
    ratio = bench["ratios"]["inference_mode / no_grad"]["wall"]
    assert len(ratio["runs"]) == 2 and ratio["min"] <= ratio["median"] <= ratio["max"]
    table = (tmp_path / "latest.md").read_text()
    assert "| inference_mode | inference_mode / no_grad" in table and "QUICK MODE" in table
    assert "1 thread(s)" in table and "python benchmarks/bench_inference_mode.py" in table
