"""ResNet-50 trunk in the original MSRA/Caffe layout, as BlitzNet uses it (docs/reference/BLITZNET.md §1.2).

Written by hand rather than from ``torchvision.models.resnet.Bottleneck`` because torchvision
puts the stride of a down-sampling unit on the 3x3 conv ("v1.5"); the reference puts it on the
first 1x1 conv, and keeps a strided *identity* shortcut when the channel count does not change
(used by the BlitzNet down-scale stream). Module names follow torchvision (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0`` ...) so a torchvision ResNet-50 state dict loads
key for key; note those weights were trained with the v1.5 stride placement, so they are a
close but not exact initialisation for this layout.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaledet.errors import UsageError
from scaledet.models.common import FeatureInfo, NormSettings
from scaledet.models.weights import load_backbone_weights

BLITZ_NORM = NormSettings.from_tf(0.9, 1e-5)  # docs/reference/BLITZNET.md §1.8


def variance_scaling_(weight: torch.Tensor, factor: float) -> torch.Tensor:
    """TF ``variance_scaling_initializer(factor, mode='FAN_IN', uniform=False)``: a normal
    truncated at two standard deviations, rescaled so the kept part has variance factor/fan_in."""
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    std = math.sqrt(factor / fan_in) / 0.87962566103423978
    # Inverse-CDF sampling written out: nn.init.trunc_normal_ in this torch version rejects
    # and redraws in a loop, which took ~40 s for the 59M weights of BlitzNet300 on CPU.
    bound = math.erf(2.0 / math.sqrt(2.0))  # P(|z| < 2) mapped to erf's (-1, 1) range
    with torch.no_grad():
        weight.uniform_(-bound, bound).erfinv_().mul_(std * math.sqrt(2.0)).clamp_(-2 * std, 2 * std)
    return weight


class TFSameMaxPool2d(nn.Module):
    """3x3/2 max-pool with TF "SAME" padding: the padding is split with the extra pixel at the
    bottom/right, so for even inputs only bottom/right are padded (docs/reference/BLITZNET.md §1.2). We chose to
    match TF rather than use PyTorch ``padding=1``, which shifts the window by one pixel."""

    def __init__(self, kernel: int = 3, stride: int = 2):
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def _pads(self, size: int) -> tuple[int, int]:
        out = -(-size // self.stride)
        total = max((out - 1) * self.stride + self.kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


class MsraBottleneck(nn.Module):
    """1x1 (stride s) -> 3x3 -> 1x1 with BN after each conv; shortcut = 1x1/s conv + BN when
    the channel count changes, a strided identity (every s-th pixel, ceil(n/s)) otherwise."""

    def __init__(self, cin: int, cout: int, width: int, stride: int = 1, *, norm: NormSettings = BLITZ_NORM):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, width, 1, stride, bias=False)
        self.bn1 = norm.make(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, padding=1, bias=False)
        self.bn2 = norm.make(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = norm.make(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm.make(cout))
                           if cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            shortcut = self.downsample(x)
        else:
            shortcut = x[..., ::self.stride, ::self.stride] if self.stride > 1 else x
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


def make_stage(cin: int, cout: int, width: int, units: int, stride: int, norm: NormSettings) -> nn.Sequential:
    return nn.Sequential(*(MsraBottleneck(cin if i == 0 else cout, cout, width, stride if i == 0 else 1, norm=norm)
                           for i in range(units)))


def init_trunk_weights(module: nn.Module) -> None:
    """Reference init: variance scaling (factor 2, fan-in, truncated normal); BN gamma 1, beta 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            variance_scaling_(m.weight, 2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BlitzResNet(nn.Module):
    """Stem (7x7/2 conv + BN + ReLU, 3x3/2 TF-SAME max-pool) and four bottleneck stages.

    Returns the outputs of stages 1-4 (strides 4, 8, 16, 32); stage 1 feeds the ``x4`` skip.
    """

    def __init__(self, depths: Sequence[int] = (3, 4, 6, 3), widths: Sequence[int] = (64, 128, 256, 512), *,
                 stem_channels: int = 64, expansion: int = 4, norm: NormSettings = BLITZ_NORM):
        super().__init__()
        if len(depths) != 4 or len(widths) != 4:
            raise UsageError(f"BlitzResNet needs 4 stage depths and widths, got {list(depths)} / {list(widths)}")
        self.conv1 = nn.Conv2d(3, stem_channels, 7, 2, padding=3, bias=False)
        self.bn1 = norm.make(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = TFSameMaxPool2d(3, 2)
        cin = stem_channels
        info = []
        for i, (units, width) in enumerate(zip(depths, widths)):
            cout = width * expansion
            self.add_module(f"layer{i + 1}", make_stage(cin, cout, width, units, 1 if i == 0 else 2, norm))
            info.append(FeatureInfo(cout, 4 * 2 ** i))
            cin = cout
        self.feature_info = info
        init_trunk_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            outs.append(x)
        return outs


# The input normalisation each kind of ImageNet weights was trained with (RGB, [0, 1] scale; the
# network sees (x - mean) / std). MSRA/Caffe and TF-slim ResNets: x255 minus the mean colour, no
# std; torchvision's: ImageNet mean and std (docs/reference/BLITZNET.md §1.1, §8.4).
CAFFE_INPUT = ((123.151630838 / 255, 115.902882574 / 255, 103.062623801 / 255), (1 / 255, 1 / 255, 1 / 255))
TORCHVISION_INPUT = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
Normalisation = tuple[tuple[float, float, float], tuple[float, float, float]]


def is_tf_checkpoint(spec: str | Path) -> bool:
    """A TF checkpoint prefix, one of its files, or a folder (TF-slim's resnet_v1_50.ckpt)."""
    path = Path(spec)
    return (path.is_dir() or path.suffix == ".index" or ".data-" in path.name
            or Path(f"{path}.index").is_file())


def load_pretrained(model: nn.Module, spec: str | Path, strict: bool = True) -> Normalisation:
    """Load ImageNet weights into the trunk; return the input normalisation they were trained
    with, which the model's input spec must then use.

    A TF-slim ``resnet_v1_50`` checkpoint (or a BlitzNet TF checkpoint's trunk) is mapped by name
    and always strictly (caffe-style inputs). Anything else is a state dict with torchvision
    ResNet-50 key names (a local file or ``SCHEME:NAME``; the classifier ``fc.*`` dropped; missing
    or unexpected keys an error when ``strict``; torchvision's normalisation, and note those
    weights were trained with the v1.5 stride placement)."""
    if is_tf_checkpoint(spec):
        from scaledet.convert.blitznet_tf import load_tfslim_trunk  # the TF reader sits above models

        load_tfslim_trunk(model, spec)
        return CAFFE_INPUT
    load_backbone_weights(model, spec, strict=strict)
    return TORCHVISION_INPUT


def blitz_resnet50(pretrained: str | Path | None = None, *, pretrained_strict: bool = True,
                   norm: NormSettings = BLITZ_NORM) -> BlitzResNet:
    model = BlitzResNet((3, 4, 6, 3), (64, 128, 256, 512), norm=norm)
    if pretrained is not None:
        load_pretrained(model, pretrained, strict=pretrained_strict)
    return model
