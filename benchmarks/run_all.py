"""Run every benchmark and write one table: ``benchmarks/results/latest.{md,json}``.

    python benchmarks/run_all.py                      # the full set, 2 threads (about an hour, idle machine)
    python benchmarks/run_all.py --quick              # smoke test: tiny models, 2 processes x 2 iterations
    python benchmarks/run_all.py --only onnxruntime,int8 --threads 1
    python benchmarks/run_all.py --update-docs        # also put the table into docs/PERFORMANCE.md, targets into README
    python benchmarks/run_all.py --only inference_vs_torchvision --merge benchmarks/results/latest.json --update-docs
                                                      # re-run one benchmark, keep the others' rows (and their dates)

Each benchmark runs its own processes (``_harness``: 3 processes x at least 5 paired iterations
by default) and reports medians with their min-max over processes. The table carries the date,
CPU model, thread count, library versions and the load average around each benchmark: figures
taken while other jobs load the machine are not comparable with idle ones.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "PERFORMANCE.md"
README = HERE.parent / "README.md"
DOC_BEGIN, DOC_END = "<!-- run_all:begin -->", "<!-- run_all:end -->"  # the full table
README_BEGIN, README_END = "<!-- run_all:targets:begin -->", "<!-- run_all:targets:end -->"  # targets only

# name -> (script, arguments). The order is the table's.
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "inference_vs_torchvision": ("bench_retinanet_vs_torchvision.py", ["--part", "inference"]),
    "training_vs_torchvision": ("bench_retinanet_vs_torchvision.py", ["--part", "training"]),
    "training_vs_torchvision_malloc_retained": ("bench_retinanet_vs_torchvision.py",
                                                ["--part", "training", "--malloc", "retain"]),
    "onnxruntime": ("bench_onnxruntime.py", []),
    "int8": ("bench_int8.py", []),
    "train_step_parts": ("bench_train_step_parts.py", []),
    "fuse_bn": ("bench_fuse_bn.py", []),
    "winograd": ("bench_winograd.py", []),
    "channels_last": ("bench_channels_last.py", []),
    "inference_mode": ("bench_inference_mode.py", []),
    "postprocess": ("bench_postprocess.py", []),
    "matmul_peak": ("bench_matmul_peak.py", []),
    "blitznet_cpu": ("bench_blitznet_cpu.py", []),
    "data_loading": ("bench_data_loading.py", []),
    "train_throughput": ("bench_train_throughput.py", []),
}
OPTIONAL = {"compile": ("bench_compile.py", [])}  # minutes of compiling per process: only with --all
# Figures without a target that the README shows next to the targets: the other deployment paths
# and the bf16 step, compared with the same torchvision baseline.
README_EXTRA = {("inference_vs_torchvision", "ONNX Runtime fp32 / torchvision"),
                ("inference_vs_torchvision", "deploy bf16 / torchvision fp32"),
                ("training_vs_torchvision", "train step bf16 / torchvision fp32"),
                ("inference_vs_torchvision", "deploy Winograd / direct conv"),
                ("training_vs_torchvision", "train step Winograd / direct conv")}
# A readable name for each benchmark's row in the README.
README_LABEL = {"training_vs_torchvision": "glibc malloc defaults in both",
                "training_vs_torchvision_malloc_retained": "freed memory retained in both",
                "onnxruntime": "retinanet_spinenet49s @640", "int8": "retinanet_spinenet49s @640"}


def versions() -> dict:
    import onnxruntime
    import torch
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__}


def run_one(name: str, script: str, extra: list[str], args, out: Path) -> dict:
    cmd = [sys.executable, str(HERE / script), *extra, "--threads", str(args.threads), "--json", str(out)]
    if args.quick:
        cmd.append("--quick")
    if args.invocations:
        cmd += ["--invocations", str(args.invocations)]
    if args.iters:
        cmd += ["--iters", str(args.iters)]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=HERE.parent)
    if done.returncode != 0 or not out.is_file():
        return {"bench": name, "failed": f"exit {done.returncode}", "command": " ".join(cmd[1:])}
    record = json.loads(out.read_text())
    record["name"], record["seconds"] = name, round(time.perf_counter() - started, 1)
    return record


def as_each_ships(records: list[dict]) -> dict | None:
    """scaledet's trainer keeps freed memory (``train.retain_freed_memory``); torchvision's
    reference recipe runs with glibc's defaults. Their step times come from two runs (not
    paired): the ratio of medians, the range from the extreme per-process medians."""
    by_name = {r.get("name"): r for r in records if "variants" in r}
    default, retained = by_name.get("training_vs_torchvision"), by_name.get("training_vs_torchvision_malloc_retained")
    if not (default and retained):
        return None
    entry = {"numerator": "scaledet train step (malloc retained)", "denominator": "torchvision train step (default)",
             "target": 0.85}
    for kind in ("wall", "cpu"):
        ours = retained["variants"]["scaledet train step"][f"{kind}_ms"]
        theirs = default["variants"]["torchvision train step"][f"{kind}_ms"]
        entry[kind] = {"median": ours["median"] / theirs["median"], "min": ours["min"] / theirs["max"],
                       "max": ours["max"] / theirs["min"]}
    entry["met"] = entry["wall"]["median"] <= entry["target"]
    return {"bench": "training_as_each_ships", "name": "training_as_each_ships",
            "ratios": {"train step, scaledet trainer as shipped / torchvision defaults (unpaired)": entry}}


def merge_earlier(path: Path, records: list[dict]) -> list[dict]:
    """``records`` plus the rows of ``path`` (an earlier ``latest.json``) for benchmarks not in
    ``records``, in the table's order; derived rows are recomputed, not kept."""
    def key(r: dict) -> str:  # a failed run has only "bench", which is then run_all's name
        return r.get("name", r["bench"])

    earlier = json.loads(path.read_text())
    now = {key(r) for r in records}
    kept = [{**r, "measured": r.get("measured", earlier["meta"]["date"])} for r in earlier["benchmarks"]
            if key(r) not in now and key(r) != "training_as_each_ships"]
    order = {name: i for i, name in enumerate([*BENCHMARKS, *OPTIONAL])}
    return sorted(records + kept, key=lambda r: order.get(key(r), len(order)))


def _range(s: dict, digits: int) -> tuple[str, str]:
    return f"{s['median']:.{digits}f}", f"{s['min']:.{digits}f}-{s['max']:.{digits}f}"


def table_date(meta: dict, records: list[dict]) -> str:
    """The date most rows were measured on (rows kept or re-run by --merge carry their own)."""
    dates = [r.get("measured", meta["date"]) for r in records if "measured" in r or "failed" not in r]
    return max(set(dates), key=dates.count) if dates else meta["date"]


def markdown(meta: dict, records: list[dict]) -> str:
    meta = {**meta, "date": table_date(meta, records)}
    lines = [f"Measured {meta['date']} on {meta['cpu_model']} ({meta['cpus']} CPUs), {meta['threads']} thread(s); "
             f"torch {meta['versions']['torch']}, torchvision {meta['versions']['torchvision']}, "
             f"onnxruntime {meta['versions']['onnxruntime']}. Each figure: the median over "
             f"{meta['invocations']} processes of that process's median (ratios: of its paired per-iteration "
             f"ratios), with the min-max over processes. Load average at start {meta['loadavg_start']}, "
             f"at end {meta['loadavg_end']}." + (" QUICK MODE (tiny models): a smoke test, not a measurement."
                                                   if meta["quick"] else ""),
             "", "| benchmark | figure | median | min-max | target | met |", "|---|---|---|---|---|---|"]
    for r in records:
        if "failed" in r:
            lines.append(f"| {r['bench']} | FAILED ({r['failed']}) | | | | |")
            continue
        if r.get("measured", meta["date"]) != meta["date"]:  # kept by --merge from an earlier run
            r = {**r, "name": f"{r['name']} (measured {r['measured']})"}
        for name, entry in r.get("ratios", {}).items():
            med, rng = _range(entry["wall"], 3)
            target = "" if entry["target"] is None else f"<= {entry['target']}"
            met = "" if entry["target"] is None else ("yes" if entry["met"] else "**no**")
            lines.append(f"| {r['name']} | {name} (wall; CPU-time {entry['cpu']['median']:.3f}) | {med}x | {rng} "
                         f"| {target} | {met} |")
        for name, entry in r.get("variants", {}).items():
            med, rng = _range(entry["wall_ms"], 1)
            lines.append(f"| {r['name']} | {name} | {med} ms | {rng} | | |")
        for name, entry in r.get("derived", {}).items():
            med, rng = _range(entry, 3)
            lines.append(f"| {r['name']} | {name} | {med} | {rng} | | |")
    lines += ["", "Commands (from the repository root): " + "; ".join(
        f"`{r['command']}`" for r in records if "command" in r) + "."]
    return "\n".join(lines) + "\n"


def targets(meta: dict, records: list[dict]) -> str:
    """The figures that have targets (and ``README_EXTRA``), as ranges, with where and when they
    were measured."""
    meta = {**meta, "date": table_date(meta, records)}
    lines = [f"Measured {meta['date']}, {meta['cpu_model']}, {meta['threads']} thread(s): median (min-max) over "
             f"{meta['invocations']} processes, ratios of paired iterations; all figures in docs/PERFORMANCE.md "
             f"(`python benchmarks/run_all.py`).", "", "| figure | median | min-max | target |", "|---|---|---|---|"]
    for r in records:
        for name, entry in r.get("ratios", {}).items():
            if entry.get("target") is None and (r.get("name"), name) not in README_EXTRA:
                continue
            med, rng = _range(entry["wall"], 2)
            label = name + (f" ({README_LABEL[r['name']]})" if r.get("name") in README_LABEL else "")
            if r.get("measured", meta["date"]) != meta["date"]:
                label += f" (measured {r['measured']})"
            target = ("" if entry.get("target") is None
                      else f"<= {entry['target']} ({'met' if entry['met'] else 'not met'})")
            lines.append(f"| {label} | {med}x | {rng} | {target} |")
    return "\n".join(lines) + "\n"


def replace_block(path: Path, begin: str, end: str, content: str) -> None:
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path}: markers {begin} / {end} not found")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{content}{end}{tail}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None, help="comma-separated benchmark names: " + ", ".join(BENCHMARKS))
    p.add_argument("--all", action="store_true", help="also the optional ones: " + ", ".join(OPTIONAL))
    p.add_argument("--invocations", type=int, default=None, help="override each benchmark's process count")
    p.add_argument("--iters", type=int, default=None, help="override each benchmark's paired iterations")
    p.add_argument("--output-dir", default=str(HERE / "results"))
    p.add_argument("--merge", default=None, metavar="LATEST.json",
                   help="keep the rows of benchmarks not run now from this earlier run_all JSON, each with its "
                        "own date (to re-run a few benchmarks after a change)")
    p.add_argument("--update-docs", action="store_true",
                   help=f"write the table into docs/{DOC.name} and the targets into {README.name}")
    args = p.parse_args()
    chosen = {**BENCHMARKS, **(OPTIONAL if args.all else {})}
    if args.only:
        wanted = args.only.split(",")
        unknown = [w for w in wanted if w not in {**BENCHMARKS, **OPTIONAL}]
        if unknown:
            p.error(f"unknown benchmark(s) {unknown}; known: {', '.join([*BENCHMARKS, *OPTIONAL])}")
        chosen = {w: {**BENCHMARKS, **OPTIONAL}[w] for w in wanted}
    sys.path.insert(0, str(HERE))
    from _harness import machine

    started = machine()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpu_model": started["cpu_model"], "cpus": started["cpus"],
            "threads": args.threads, "quick": args.quick, "versions": versions(),
            "invocations": args.invocations or (2 if args.quick else 3), "loadavg_start": started["loadavg"]}
    records = []
    with tempfile.TemporaryDirectory(prefix="run_all-") as tmp:
        for name, (script, extra) in chosen.items():
            records.append(run_one(name, script, extra, args, Path(tmp) / f"{name}.json"))
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    for r in records:
        r["measured"] = meta["date"]
    if args.merge:
        records = merge_earlier(Path(args.merge), records)
    shipped = as_each_ships(records)
    if shipped:
        records.append(shipped)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(meta, records)
    (out_dir / "latest.md").write_text(table)
    (out_dir / "latest.json").write_text(json.dumps({"meta": meta, "benchmarks": records}, indent=1))
    print(table)
    print(f"wrote {out_dir / 'latest.md'} and {out_dir / 'latest.json'}")
    if args.update_docs:
        replace_block(DOC, DOC_BEGIN, DOC_END, table)
        replace_block(README, README_BEGIN, README_END, targets(meta, records))
        print(f"updated {DOC} and {README}")
    if any("failed" in r for r in records):
        sys.exit("some benchmarks failed: " + ", ".join(r["bench"] for r in records if "failed" in r))


if __name__ == "__main__":
    main()
