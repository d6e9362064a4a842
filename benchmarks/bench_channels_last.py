"""Inference (forward + post-processing) in NCHW vs channels_last memory format."""
from __future__ import annotations

import torch

from _bench_args import inference_setup, done, measure, parser, ratio, setup

args = parser(__doc__).parse_args()
setup(args)
model, x, sizes = inference_setup(args)


def run(m, images):
    with torch.inference_mode():
        return m.postprocess(m(images), sizes)


before = measure("NCHW (contiguous)", lambda: run(model, x), args)
model_cl = model.to(memory_format=torch.channels_last)
x_cl = x.contiguous(memory_format=torch.channels_last)
after = measure("channels_last", lambda: run(model_cl, x_cl), args)
done({"bench": "channels_last", "ratio": ratio("channels_last vs NCHW", before, after)})
