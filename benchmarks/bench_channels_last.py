"""Inference (forward + post-processing) in NCHW against channels-last memory, BatchNorm unfolded.

    python benchmarks/bench_channels_last.py [--model retinanet_spinenet49s --image-size 640]
"""
from __future__ import annotations

import copy

import torch

from _bench_args import add_model_arguments, inference_call, inference_setup
from _harness import Bench, Ratio, main

NCHW, CL = "NCHW (contiguous)", "channels-last"


def variants(args) -> dict:
    model, x, sizes = inference_setup(args)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return {NCHW: inference_call(model, x, sizes),
            CL: inference_call(model_cl, x.contiguous(memory_format=torch.channels_last), sizes)}


BENCH = Bench("channels_last", __doc__, variants=variants, add_arguments=add_model_arguments,
              ratios=[Ratio("channels-last / NCHW", CL, NCHW)],
              quick={"model": "retinanet_spinenet49_tiny", "image_size": 128})

if __name__ == "__main__":
    main(BENCH)
