"""``torch.no_grad`` against ``torch.inference_mode`` for forward + post-processing.

    python benchmarks/bench_inference_mode.py [--model retinanet_spinenet49s --image-size 640]
"""
from __future__ import annotations

import torch

from _bench_args import add_model_arguments, inference_setup
from _harness import Bench, Ratio, main

NO_GRAD, INFERENCE = "torch.no_grad", "torch.inference_mode"


def variants(args) -> dict:
    model, x, sizes = inference_setup(args)

    def run(context):
        def call():
            with context():
                return model.postprocess(model(x), sizes)
        return call

    return {NO_GRAD: run(torch.no_grad), INFERENCE: run(torch.inference_mode)}


BENCH = Bench("inference_mode", __doc__, variants=variants, add_arguments=add_model_arguments,
              ratios=[Ratio("inference_mode / no_grad", INFERENCE, NO_GRAD)],
              quick={"model": "retinanet_spinenet49_tiny", "image_size": 128})

if __name__ == "__main__":
    main(BENCH)
