"""One 3x3 convolution layer, direct (oneDNN) against Winograd F(4x4, 3x3) (scaledet.ops.winograd).

The layer shapes are those of retinanet_resnet50_fpn at 640 px: ResNet stages 1-4 (64 channels
at 160 px down to 512 at 20 px), the FPN / head towers (256 channels, 80 px to 5 px) and the
two predictors (819 = 9 anchors x 91 classes, 36 = 9 x 4). *inference*: batch 1, forward
under ``inference_mode``, the transformed kernel made once, as in ``optimized_for_inference``.
*training*: batch 2, forward + backward (input, kernel and bias gradients), as the trainer runs
it. Both channels-last. The record keeps each shape's largest fp32 difference from the direct
result, relative to the output's largest magnitude. These figures choose where
``WinogradConv2d`` applies (``min_area``, ``min_area_training``, ``use_winograd(min_channels=...)``).

    python benchmarks/bench_winograd.py [--shapes 256x256@80 128x128@80]
"""
from __future__ import annotations

import torch
import torch.nn as nn

from _harness import Bench, Ratio, main
from scaledet.ops.winograd import WinogradConv2d

SHAPES = ["64x64@160", "128x128@80", "256x256@40", "512x512@20", "256x256@80", "256x819@80", "256x36@80",
          "256x256@20", "256x256@10", "256x256@5"]
QUICK_SHAPES = ["128x128@16", "256x256@8"]
MODES = {"inference": 1, "training": 2}  # batch size of each


def parse_shape(text: str) -> tuple[int, int, int]:
    channels, size = text.split("@")
    c_in, c_out = channels.split("x")
    return int(c_in), int(c_out), int(size)


def layer_calls(shape: str, mode: str):
    c_in, c_out, size = parse_shape(shape)
    torch.manual_seed(0)
    direct = nn.Conv2d(c_in, c_out, 3, padding=1).to(memory_format=torch.channels_last)
    winograd = WinogradConv2d.from_conv(direct)
    winograd.min_area = winograd.min_area_training = 0  # always Winograd, whatever the size
    x = torch.randn(MODES[mode], c_in, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = direct(x)
        error = float((winograd(x) - reference).abs().max() / reference.abs().max())
    if mode == "inference":
        def call(layer):
            def run():
                with torch.inference_mode():
                    return layer(x)
            return run
    else:
        x.requires_grad_()
        grad = torch.randn_like(reference).contiguous(memory_format=torch.channels_last)

        def call(layer):
            def run():
                layer.zero_grad(set_to_none=True)
                x.grad = None
                layer(x).backward(grad)
            return run
    return call(direct), call(winograd), error


def variants(args):
    calls, errors = {}, {}
    for mode in args.modes:
        for shape in args.shapes:
            direct, winograd, errors[f"{mode} {shape}"] = layer_calls(shape, mode)
            calls[f"{mode} {shape} direct"] = direct
            calls[f"{mode} {shape} winograd"] = winograd
    return calls, {"max_relative_difference": errors}


def add_arguments(p) -> None:
    p.add_argument("--shapes", nargs="+", default=SHAPES, help="C_inxC_out@size, e.g. 256x256@80")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))


BENCH = Bench("winograd", __doc__, variants=variants, add_arguments=add_arguments,
              ratios=[Ratio(f"{mode} {shape} Winograd / direct", f"{mode} {shape} winograd", f"{mode} {shape} direct")
                      for mode in MODES for shape in SHAPES + QUICK_SHAPES],
              quick={"shapes": QUICK_SHAPES})

if __name__ == "__main__":
    main(BENCH)
