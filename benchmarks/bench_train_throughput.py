"""Training throughput (images/s) of `scaledet train` with 1 and N processes (torchrun, gloo/CPU).

    python benchmarks/bench_train_throughput.py [--model retinanet_spinenet49_tiny] [--image-size 128]
        [--batch-size 2] [--steps 12] [--procs 1,2] [--sync-bn] [--threads N] [--device cpu]

Weak scaling: every process trains ``--batch-size`` images per step, so N processes train a global
batch N times larger. Each process gets cores // N intra-op threads (or ``--threads``), so 1
process may use every core. The figure is the median of the per-step images/s rank 0 logs (global images per second)
after the first two steps; start-up and the final evaluation are left out. On a shared machine
the processes compete with anything else running: compare runs made back to back.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    threads = args.threads or max(1, (os.cpu_count() or 1) // procs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    began = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{procs} process(es) failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    with (out / "metrics.csv").open() as f:
        rates = [float(row["images_per_s"]) for row in csv.DictReader(f)][2:]
    return statistics.median(rates), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="retinanet_spinenet49_tiny")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2, help="per process")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--procs", default="1,2", help="comma-separated process counts")
    parser.add_argument("--sync-bn", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads per process (default: cores // processes)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    if args.steps < 4:
        parser.error("--steps must be at least 4 (the first two are warm-up)")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        cfg = write_config(work, args)
        rows = []
        for procs in (int(p) for p in args.procs.split(",")):
            rate, wall = run(procs, cfg, work / f"run{procs}", args)
            rows.append((procs, procs * args.batch_size, rate, wall))
    base = rows[0][2]
    print(f"{args.model} @{args.image_size}px, {args.batch_size} images/step/process, {args.steps} steps, "
          f"device {args.device}, {os.cpu_count()} cores, threads/process "
          f"{args.threads or 'cores // processes'}, sync_bn={args.sync_bn}")
    print(f"{'processes':>9} {'global batch':>12} {'images/s':>9} {'speed-up':>8} {'wall s':>7}")
    for procs, batch, rate, wall in rows:
        print(f"{procs:>9} {batch:>12} {rate:>9.2f} {rate / base:>8.2f} {wall:>7.1f}")


if __name__ == "__main__":
    main()
