"""One driver for every benchmark in this folder: paired iterations, several processes, ranges.

A benchmark script says *what* to time and calls :func:`main` with a :class:`Bench`:
``variants(args)`` builds named callables (the first is the reference), ``ratios`` name the
comparisons that matter (with their targets), ``derived(medians, args)`` turns per-variant
median seconds into further figures, and ``figures(args)`` measures figures that are not
per-call timings (e.g. whole training runs). The driver then

- starts the script ``--invocations`` times (default 3) as separate processes, so allocator
  state, thread pools and the machine's mood differ between samples;
- in each process builds the variants once, warms each up ``--warmup`` times, then runs
  ``--iters`` (default 5) *paired* iterations: every variant once per iteration, in an order
  rotated by one each time, so a change in machine load hits every variant alike;
- records the wall and the process CPU time of every call (CPU time counts all threads; it does
  not count waiting for a core, so it is the steadier figure on a shared machine);
- per process: each variant's median, and each ratio as the median of the per-iteration ratios;
- across processes: the **median and the min-max** of those per-process figures.

Every run prints the thread count, the CPU model and the load average. ``--json PATH`` writes the
record that ``benchmarks/run_all.py`` collects into one table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

RESULT_MARK = "@@bench-result "


@dataclass(frozen=True)
class Ratio:
    """``numerator / denominator`` time (lower is better for the numerator); met when the median
    over processes is at most ``target``."""
    name: str
    numerator: str
    denominator: str
    target: float | None = None


@dataclass
class Bench:
    name: str
    description: str
    # name -> callable, or (that dict, notes): JSON-able facts of the run (errors, sizes) kept in the record
    variants: Callable[[argparse.Namespace], dict | tuple[dict, dict]] | None = None
    ratios: list[Ratio] = field(default_factory=list)
    derived: Callable[[dict[str, float], argparse.Namespace], dict[str, float]] | None = None
    figures: Callable[[argparse.Namespace], dict[str, float]] | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    prepare: Callable[[argparse.Namespace], None] | None = None  # once, in the parent, before the processes
    quick: dict = field(default_factory=dict)  # argument overrides for --quick
    iters: int = 5
    warmup: int = 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    return {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version()}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


# ---------------------------------------------------------------------------------------- one process

def _paired_times(variants: dict[str, Callable[[], object]], iters: int, warmup: int) -> dict[str, dict]:
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    out = {name: {"wall": [], "cpu": []} for name in names}
    for i in range(iters):
        for name in names[i % len(names):] + names[:i % len(names)]:
            cpu, wall = time.process_time(), time.perf_counter()
            variants[name]()
            out[name]["wall"].append(time.perf_counter() - wall)
            out[name]["cpu"].append(time.process_time() - cpu)
    return out


def _one_process(bench: Bench, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    result: dict = {"threads": torch.get_num_threads(), "loadavg_start": list(os.getloadavg())}
    if args.malloc == "retain":
        from scaledet.utils.memory import retain_freed_memory

        result["malloc_retained"] = retain_freed_memory()
    if bench.variants is not None:
        built = bench.variants(args)
        variants, notes = built if isinstance(built, tuple) else (built, None)
        times = _paired_times(variants, args.iters, args.warmup)
        result["times"] = times
        result["notes"] = notes
        result["ratios"] = {
            r.name: {kind: statistics.median(n / d for n, d in zip(times[r.numerator][kind], times[r.denominator][kind]))
                     for kind in ("wall", "cpu")}
            for r in bench.ratios if r.numerator in times and r.denominator in times}
        medians = {name: statistics.median(t["wall"]) for name, t in times.items()}
        result["derived"] = bench.derived(medians, args) if bench.derived else {}
    if bench.figures is not None:
        result.setdefault("derived", {}).update(bench.figures(args))
    result["loadavg_end"] = list(os.getloadavg())
    return result


# ---------------------------------------------------------------------------------------- the parent

def _parser(bench: Bench) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=bench.description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--invocations", type=int, default=3, help="separate processes (default 3)")
    p.add_argument("--iters", type=int, default=bench.iters, help=f"paired iterations per process ({bench.iters})")
    p.add_argument("--warmup", type=int, default=bench.warmup, help="untimed calls of each variant first")
    p.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--malloc", choices=["default", "retain"], default="default",
                   help="glibc malloc as it comes, or keeping freed memory (scaledet.utils.memory), for "
                        "every variant alike (default: default)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny settings, 2 processes x 2 iterations")
    p.add_argument("--json", default=None, help="write the aggregated record here")
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    if bench.add_arguments:
        bench.add_arguments(p)
    return p


def _apply_quick(bench: Bench, args: argparse.Namespace) -> None:
    if not args.quick:
        return
    args.invocations, args.iters, args.warmup = 2, 2, 1
    for key, value in bench.quick.items():
        setattr(args, key, value)


def _child_command(argv: list[str], args: argparse.Namespace, out: Path) -> list[str]:
    return [sys.executable, sys.argv[0], *argv, "--workdir", args.workdir, "--worker", str(out)]


def _aggregate(bench: Bench, args: argparse.Namespace, runs: list[dict]) -> dict:
    record: dict = {"bench": bench.name, "title": bench.description.strip().splitlines()[0],
                    "command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *_user_argv()]),
                    "threads": runs[0]["threads"], "invocations": len(runs), "iters": args.iters,
                    "warmup": args.warmup, "quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    **machine(), "loadavg_per_run": [[r["loadavg_start"], r["loadavg_end"]] for r in runs],
                    "args": {k: v for k, v in vars(args).items() if k not in ("worker", "workdir", "json")}}
    if "times" in runs[0]:
        record["variants"] = {
            name: {f"{kind}_ms": spread([statistics.median(r["times"][name][kind]) * 1e3 for r in runs])
                   for kind in ("wall", "cpu")} for name in runs[0]["times"]}
        record["ratios"] = {}
        for r in bench.ratios:
            if r.name not in runs[0]["ratios"]:
                continue
            entry = {kind: spread([run["ratios"][r.name][kind] for run in runs]) for kind in ("wall", "cpu")}
            entry.update(numerator=r.numerator, denominator=r.denominator, target=r.target)
            if r.target is not None:
                entry["met"] = entry["wall"]["median"] <= r.target
            record["ratios"][r.name] = entry
        record["notes"] = [r.get("notes") for r in runs]
    if runs[0].get("derived"):
        record["derived"] = {k: spread([r["derived"][k] for r in runs]) for k in runs[0]["derived"]}
    return record


def _user_argv() -> list[str]:
    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a in ("--json", "--workdir", "--worker"):
            skip = True
            continue
        argv.append(a)
    return argv


def fmt_range(s: dict, unit: str = "", digits: int = 3) -> str:
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def print_record(record: dict) -> None:
    print(f"# {record['title']}")
    print(f"# {record['cpu_model']}, {record['threads']} thread(s), {record['invocations']} processes x "
          f"{record['iters']} paired iterations; median (min-max) over processes; load average per process "
          f"{[round(a[0][0], 2) for a in record['loadavg_per_run']]}")
    for name, v in record.get("variants", {}).items():
        print(f"{name:<40} wall {fmt_range(v['wall_ms'], ' ms', 1):>32}   CPU {fmt_range(v['cpu_ms'], ' ms', 1):>32}")
    for name, r in record.get("ratios", {}).items():
        target = "" if r["target"] is None else f"   target <= {r['target']}: {'met' if r['met'] else 'NOT met'}"
        print(f"{name:<40} wall {fmt_range(r['wall']):>24}   CPU {fmt_range(r['cpu']):>24}{target}")
    for name, d in record.get("derived", {}).items():
        print(f"{name:<40} {fmt_range(d, '', 3)}")


def main(bench: Bench) -> dict | None:
    parser = _parser(bench)
    args = parser.parse_args()
    _apply_quick(bench, args)
    if args.worker:
        result = _one_process(bench, args)
        Path(args.worker).write_text(json.dumps(result))
        return None
    if args.invocations < 1 or args.iters < 1:
        parser.error("--invocations and --iters must be at least 1")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(prefix=f"bench-{bench.name}-") as tmp:
        args.workdir = tmp
        if bench.prepare:
            bench.prepare(args)
        runs = []
        for i in range(args.invocations):
            out = Path(tmp) / f"run{i}.json"
            done = subprocess.run(_child_command(sys.argv[1:], args, out), env=env)
            if done.returncode != 0 or not out.is_file():
                sys.exit(f"{bench.name}: process {i + 1} of {args.invocations} failed (exit {done.returncode})")
            runs.append(json.loads(out.read_text()))
    record = _aggregate(bench, args, runs)
    print_record(record)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1))
    return record
