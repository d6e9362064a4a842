"""Inference with BatchNorm as separate ops against BatchNorm folded into the convolutions
(``fuse_conv_bn``), both NCHW; the largest class-logit difference is kept in the record.

    python benchmarks/bench_fuse_bn.py [--model retinanet_spinenet49s --image-size 640]
"""
from __future__ import annotations

import torch

from _bench_args import add_model_arguments, inference_call, inference_setup
from _harness import Bench, Ratio, main
from scaledet.export.fuse import fuse_conv_bn

SEPARATE, FOLDED = "BatchNorm separate", "BatchNorm folded"


def variants(args):
    model, x, sizes = inference_setup(args)
    fused = fuse_conv_bn(model)
    with torch.inference_mode():
        a, b = model(x), fused(x)
    err = max(float((u - v).abs().max()) for u, v in zip(a["cls_logits"], b["cls_logits"]))
    return ({SEPARATE: inference_call(model, x, sizes), FOLDED: inference_call(fused, x, sizes)},
            {"folded_pairs": fused.fused_conv_bn_pairs, "max_abs_logit_diff": err})


BENCH = Bench("fuse_bn", __doc__, variants=variants, add_arguments=add_model_arguments,
              ratios=[Ratio("folded / separate", FOLDED, SEPARATE)],
              quick={"model": "retinanet_spinenet49_tiny", "image_size": 128})

if __name__ == "__main__":
    main(BENCH)
