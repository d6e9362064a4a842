"""CPU latency of BlitzNet at batch 1: forward alone, and forward + post-processing (detection
NMS and the segmentation argmax at input resolution).

Random weights and a random image: the score threshold then passes many boxes, so the NMS part
is a pessimistic figure.

    python benchmarks/bench_blitznet_cpu.py [--model blitznet300_r50] [--image-size 300]
"""
from __future__ import annotations

import torch

from _bench_args import add_model_arguments, inference_call, inference_setup
from _harness import Bench, main

FORWARD, FULL = "forward", "forward + post-processing"


def variants(args) -> dict:
    model, x, sizes = inference_setup(args)

    def forward():
        with torch.inference_mode():
            return model(x)

    return {FORWARD: forward, FULL: inference_call(model, x, sizes)}


def add_arguments(p) -> None:
    add_model_arguments(p, model="blitznet300_r50", image_size=300)


BENCH = Bench("blitznet_cpu", __doc__, variants=variants, add_arguments=add_arguments, iters=10, warmup=3,
              quick={"model": "blitznet_tiny", "image_size": 128})

if __name__ == "__main__":
    main(BENCH)
