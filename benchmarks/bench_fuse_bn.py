"""Inference with BatchNorm as separate ops vs folded into the convolutions (fuse_conv_bn)."""
from __future__ import annotations

import torch

from _bench_args import inference_setup, done, measure, parser, ratio, setup
from scaledet.export.fuse import fuse_conv_bn

args = parser(__doc__).parse_args()
setup(args)
model, x, sizes = inference_setup(args)
fused = fuse_conv_bn(model)


def run(m):
    with torch.inference_mode():
        return m.postprocess(m(x), sizes)


before = measure("BatchNorm separate", lambda: run(model), args)
after = measure(f"BatchNorm folded ({fused.fused_conv_bn_pairs} pairs)", lambda: run(fused), args)
with torch.inference_mode():
    a, b = model(x), fused(x)
err = max(float((u - v).abs().max()) for u, v in zip(a["cls_logits"], b["cls_logits"]))
print(f"max |cls logit difference| = {err:.2e}")
done({"bench": "fuse_bn", "ratio": ratio("fused vs unfused", before, after), "max_abs_logit_diff": err})
