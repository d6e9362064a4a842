"""Inference (forward + post-processing) in NCHW vs channels_last memory format."""
from __future__ import annotations

import torch

from _bench_args import done, measure, parser, ratio, setup
from scaledet.registry import create_model

args = parser(__doc__).parse_args()
setup(args)
torch.manual_seed(0)
model = create_model(args.model).eval()
x = torch.randn(args.batch, 3, args.image_size, args.image_size)
sizes = torch.tensor([[args.image_size] * 2] * args.batch)


def run(m, images):
    with torch.inference_mode():
        return m.postprocess(m(images), sizes)


before = measure("NCHW (contiguous)", lambda: run(model, x), args)
model_cl = model.to(memory_format=torch.channels_last)
x_cl = x.contiguous(memory_format=torch.channels_last)
after = measure("channels_last", lambda: run(model_cl, x_cl), args)
done({"bench": "channels_last", "ratio": ratio("channels_last vs NCHW", before, after)})
