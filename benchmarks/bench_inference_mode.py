"""torch.no_grad vs torch.inference_mode for forward + post-processing."""
from __future__ import annotations

import torch

from _bench_args import inference_setup, done, measure, parser, ratio, setup

args = parser(__doc__).parse_args()
setup(args)
model, x, sizes = inference_setup(args)


def run(context):
    with context():
        return model.postprocess(model(x), sizes)


before = measure("torch.no_grad", lambda: run(torch.no_grad), args)
after = measure("torch.inference_mode", lambda: run(torch.inference_mode), args)
done({"bench": "inference_mode", "ratio": ratio("inference_mode vs no_grad", before, after)})
