"""Training throughput (images/s) of `scaledet train` with 1 and N processes (torchrun, gloo/CPU).

    python benchmarks/bench_train_throughput.py [--model retinanet_spinenet49_tiny] [--image-size 128]
        [--batch-size 2] [--steps 12] [--procs 1,2] [--sync-bn] [--threads 2] [--device cpu]

Weak scaling: every process trains ``--batch-size`` images per step, so N processes train a global
batch N times larger. Each process gets ``--threads // N`` intra-op threads, so 1 process uses
all ``--threads``. The figure is the median of the per-step images/s rank 0 logs (global images per second)
after the first two steps; start-up and the final evaluation are left out. On a shared machine
the processes compete with anything else running: compare runs made back to back.
"""
from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import Bench, main
from scaledet.config import load_config, save_config
from scaledet.data.synthetic import make_synthetic_coco


def write_config(work: Path, args) -> Path:
    make_synthetic_coco(work / "data", num_train=64, num_val=2, image_size=args.image_size, seed=0)
    overrides = [
        f"data.root={work / 'data'}", "data.synthetic_train=64", "data.synthetic_val=2",
        f"data.synthetic_image_size={args.image_size}", "data.num_workers=0", f"model.name={args.model}",
        f"model.image_size={args.image_size}", f"train.batch_size={args.batch_size}",
        f"train.total_steps={args.steps}", "train.log_every=1", f"train.checkpoint_every={10 * args.steps}",
        f"train.sync_bn={'true' if args.sync_bn else 'false'}", "optim.warmup_steps=0", "optim.lr=0.001",
    ]
    if args.model.endswith("_tiny"):
        overrides.append("model.args={head_width: 32, endpoints_num_filters: 32}")
    path = work / "cfg.yaml"
    save_config(load_config(None, overrides), path)
    return path


def run(procs: int, cfg: Path, out: Path, args) -> tuple[float, float]:
    train = ["-m", "scaledet.cli.main", "train", str(cfg), "--output", str(out), "--no-progress",
             "--device", args.device]
    if procs == 1:
        cmd = [sys.executable, *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *train]
    threads = max(1, args.threads // procs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    began = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{procs} process(es) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    with (out / "metrics.csv").open() as f:
        rates = [float(row["images_per_s"]) for row in csv.DictReader(f)][2:]
    return statistics.median(rates), wall


def figures(args) -> dict[str, float]:
    """One training run per process count (each its own processes); images/s and speed-up."""
    if args.steps < 4:
        raise SystemExit("--steps must be at least 4 (the first two are warm-up)")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        cfg = write_config(work, args)
        base = None
        for procs in (int(p) for p in args.procs.split(",")):
            rate, _wall = run(procs, cfg, work / f"run{procs}", args)
            base = base or rate
            out[f"images/s, {procs} process(es)"] = rate
            out[f"speed-up, {procs} process(es)"] = rate / base
    return out


def add_arguments(p) -> None:
    p.add_argument("--model", default="retinanet_spinenet49_tiny")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=2, help="per process")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--procs", default="1,2", help="comma-separated process counts")
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


BENCH = Bench("train_throughput", __doc__, figures=figures, add_arguments=add_arguments,
              quick={"steps": 4, "image_size": 64})

if __name__ == "__main__":
    main(BENCH)
