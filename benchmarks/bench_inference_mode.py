"""torch.no_grad vs torch.inference_mode for forward + post-processing."""
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


def run(context):
    with context():
        return model.postprocess(model(x), sizes)


before = measure("torch.no_grad", lambda: run(torch.no_grad), args)
after = measure("torch.inference_mode", lambda: run(torch.inference_mode), args)
done({"bench": "inference_mode", "ratio": ratio("inference_mode vs no_grad", before, after)})
