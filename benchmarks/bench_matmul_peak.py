"""The machine's own fp32 matmul rate (n x n sgemm) and a detector's inference rate as a
fraction of it (2 x multiply-adds x images/s), per wall second.

    python benchmarks/bench_matmul_peak.py [--n 2048] [--model retinanet_spinenet49s --image-size 640]
"""
from __future__ import annotations

import torch

from _bench_args import add_model_arguments, inference_call, inference_setup
from _harness import Bench, main
from scaledet.utils.flops import count_macs

SGEMM, MODEL = "sgemm", "detector forward + post-processing"


def variants(args) -> dict:
    a = torch.randn(args.n, args.n, generator=torch.Generator().manual_seed(0))
    b = torch.randn(args.n, args.n, generator=torch.Generator().manual_seed(1))
    model, x, sizes = inference_setup(args)
    args.macs = count_macs(model, args.image_size)
    return {SGEMM: lambda: a @ b, MODEL: inference_call(model, x, sizes)}


def derived(medians: dict[str, float], args) -> dict[str, float]:
    sgemm = 2 * args.n ** 3 / medians[SGEMM] / 1e9
    model = 2 * args.macs * args.batch / medians[MODEL] / 1e9
    return {"sgemm GFLOP/s": sgemm, "detector GFLOP/s": model, "detector / sgemm rate": model / sgemm}


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--n", type=int, default=2048)


BENCH = Bench("matmul_peak", __doc__, variants=variants, derived=derived, add_arguments=add_arguments,
              quick={"model": "retinanet_spinenet49_tiny", "image_size": 128, "n": 512})

if __name__ == "__main__":
    main(BENCH)
