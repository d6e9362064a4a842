"""CPU latency of BlitzNet at batch 1: forward alone, and forward + post-processing (detection
NMS and the segmentation argmax at input resolution).

    python benchmarks/bench_blitznet_cpu.py [--model blitznet300_r50] [--iters 10] [--threads N]

Random weights and a random image: the score threshold then passes many boxes, so the NMS part
is a pessimistic figure. Numbers are medians of ``--iters`` runs after ``--warmup`` runs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from scaledet.registry import create_model


def median_ms(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="blitznet300_r50")
    parser.add_argument("--image-size", type=int, default=None, help="default: the model's own")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    size = args.image_size or model.default_image_size
    image = torch.randn(1, 3, size, size)
    sizes = [(size, size)]

    with torch.inference_mode():
        forward_ms = median_ms(lambda: model(image), args.iters, args.warmup)
        full_ms = median_ms(lambda: model.postprocess(model(image), sizes), args.iters, args.warmup)
    print(f"{args.model} @ {size}x{size}, batch 1, {torch.get_num_threads()} thread(s), "
          f"median of {args.iters}: forward {forward_ms:.1f} ms, forward + postprocess {full_ms:.1f} ms")


if __name__ == "__main__":
    main()
