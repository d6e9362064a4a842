"""Shared command-line options and printing for the before/after scripts in this folder."""
from __future__ import annotations

import argparse
import json

import torch

from scaledet.utils.benchmark import machine_note, summarise, time_calls


def parser(description: str, *, model: str = "retinanet_spinenet49s", image_size: int = 640,
           iters: int = 3) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default=model)
    p.add_argument("--image-size", type=int, default=image_size)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=iters)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1,
                   help="torch/ORT intra-op threads (default 1: on a shared machine more threads stall)")
    return p


def setup(args) -> None:
    torch.set_num_threads(args.threads)
    print(f"# {machine_note()}")


def measure(label: str, fn, args, batch: int | None = None) -> dict:
    cpu: list[float] = []
    stats = summarise(time_calls(fn, iters=args.iters, warmup=args.warmup, cpu_times=cpu), batch or args.batch, cpu)
    print(f"{label:<34} p50 {stats['p50_ms']:9.1f} ms  p90 {stats['p90_ms']:9.1f} ms  "
          f"CPU p50 {stats['cpu_p50_ms']:9.1f} ms  {stats['images_per_s']:8.2f} img/s")
    return stats


def ratio(name: str, before: dict, after: dict) -> float:
    """after/before of the wall p50; the CPU-time ratio is printed too (steadier under load)."""
    value = after["p50_ms"] / before["p50_ms"]
    cpu = after["cpu_p50_ms"] / before["cpu_p50_ms"]
    print(f"{name}: after/before latency = {value:.3f} wall (speed-up x{1 / value:.2f}), {cpu:.3f} CPU time")
    return value


def done(record: dict) -> None:
    print("# " + json.dumps({**record, **machine_note()}))


def inference_setup(args):
    """A seeded eval-mode ``args.model`` and a random input batch with its image sizes."""
    import torch

    from scaledet.registry import create_model

    torch.manual_seed(0)
    model = create_model(args.model).eval()
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    sizes = torch.tensor([[args.image_size] * 2] * args.batch)
    return model, x, sizes
