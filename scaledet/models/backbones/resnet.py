"""ResNet backbones returning C3, C4, C5, with torchvision's ``ResNet`` as the trunk.

Only the wiring is ours: which stages are returned, which norm layer the trunk gets, which
stages train, and loading ImageNet weights (a local file or a name such as
``torchvision:ResNet50_Weights.IMAGENET1K_V1``; torchvision or timm naming, which agree for ResNet). Parameter names equal torchvision's, so its checkpoints load without renaming.

Two options reproduce TF2 Model Garden's ResNet (docs/reference/TF_ARITHMETIC.md), whose blocks
are torchvision's (stride on the 3x3 conv):
- ``padding="same"``: the 7x7/2 stem conv, the stride-2 3x3 convs and the stem max pool pad
  like TensorFlow's 'SAME' (extra row/column at the bottom/right) instead of symmetrically.
- ``width_multiplier``: Model Garden's ``depth_multiplier``; every width, the stem's included,
  is ``int(width * multiplier)``.

``stem_width`` sets the stem's width on its own: the MindSpore NAS-FPN port's narrow ResNets keep
a 64-wide stem whatever their stage widths (docs/reference/MINDSPORE_FORMATS.md §6).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d

from scaledet.errors import UsageError
from scaledet.models.common import Conv2dSame, FeatureInfo, NormSettings, Padding, check_padding, max_pool2d
from scaledet.models.weights import LoadReport, load_backbone_weights
from scaledet.utils.modules import replace_modules

DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
# Trunk modules from the output back to the input, as torchvision's trainable_backbone_layers.
_STAGES_FROM_TOP = ("layer4", "layer3", "layer2", "layer1", "conv1")


class ResNetBackbone(ResNet):
    """torchvision ResNet without ``avgpool``/``fc``; ``forward`` returns ``[C3, C4, C5]``.

    - ``frozen_bn``: BN as ``FrozenBatchNorm2d`` (fixed affine + statistics, torchvision's choice
      for detection fine-tuning; only ``norm.eps`` applies); otherwise ``nn.BatchNorm2d`` with
      ``norm`` settings (PyTorch's defaults when ``None``).
    - ``trainable_layers``: 0..5 stages trained, counted from ``layer4`` down to ``conv1``
      (5 also trains ``bn1``), exactly torchvision's ``trainable_backbone_layers``.
    - ``pretrained``: ImageNet weights, a local file or ``SCHEME:NAME``
      (:func:`scaledet.models.weights.load_backbone_weights`); missing or unexpected keys are an
      error unless ``pretrained_strict`` is False.
    """

    def __init__(self, block: str = "bottleneck", layers: Sequence[int] = (3, 4, 6, 3), *,
                 frozen_bn: bool = True, norm: NormSettings | None = None, trainable_layers: int = 5,
                 pretrained: str | Path | None = None, pretrained_strict: bool = True, width_per_group: int = 64,
                 zero_init_residual: bool = False, padding: Padding = "symmetric",
                 width_multiplier: float = 1.0, stem_width: int | None = None):
        if block not in _BLOCKS:
            raise UsageError(f"unknown ResNet block {block!r}; allowed: {', '.join(_BLOCKS)}")
        if not 0 <= trainable_layers <= 5:
            raise UsageError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        check_padding(padding, "ResNet")
        if not 0 < width_multiplier <= 1 or int(64 * width_multiplier) < 1:
            raise UsageError(f"ResNet: width_multiplier must be in (0, 1] with int(64 * m) >= 1, "
                             f"got {width_multiplier}")
        if stem_width is not None and stem_width < 1:
            raise UsageError(f"ResNet: stem_width must be a positive integer or None, got {stem_width}")
        self.width_multiplier = width_multiplier
        self.stem_width = stem_width or self._scaled(64)
        norm = norm or NormSettings()
        if frozen_bn:
            norm_layer = functools.partial(FrozenBatchNorm2d, eps=norm.eps)
        else:
            norm_layer = functools.partial(nn.BatchNorm2d, momentum=norm.momentum, eps=norm.eps)
        super().__init__(_BLOCKS[block], list(layers), width_per_group=width_per_group, norm_layer=norm_layer,
                         zero_init_residual=zero_init_residual)
        del self.avgpool, self.fc
        if self.stem_width != 64:
            stem = self.stem_width
            self.conv1 = nn.Conv2d(3, stem, 7, 2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.bn1 = norm_layer(stem)
        if padding == "same":
            self._use_tf_same_padding()
        expansion = _BLOCKS[block].expansion
        self.feature_info = [FeatureInfo(self._scaled(width) * expansion, stride)
                             for width, stride in ((128, 8), (256, 16), (512, 32))]
        self.load_report: LoadReport | None = None
        if pretrained is not None:
            self.load_report = self.load_pretrained(pretrained, strict=pretrained_strict)
        self.freeze_stages(trainable_layers)

    def _scaled(self, width: int) -> int:
        return int(width * self.width_multiplier)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        # torchvision calls this with planes 64/128/256/512; the stem has set self.inplanes to 64.
        if planes == 64:
            self.inplanes = self.stem_width
        return super()._make_layer(block, self._scaled(planes), blocks, stride, dilate)

    def _use_tf_same_padding(self) -> None:
        """Swap every strided conv (and the stem pool) for its 'SAME'-padded twin, same parameters."""
        def same_padded(child: nn.Module) -> nn.Module | None:
            if not (isinstance(child, nn.Conv2d) and child.stride[0] > 1 and child.kernel_size[0] > 1):
                return None
            twin = Conv2dSame(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                              padding=0, bias=child.bias is not None, groups=child.groups)
            twin.load_state_dict(child.state_dict())
            return twin

        replace_modules(self, same_padded)
        self.maxpool = max_pool2d(3, 2, padding="same")

    def freeze_stages(self, trainable_layers: int) -> None:
        trained = list(_STAGES_FROM_TOP[:trainable_layers])
        if trainable_layers == 5:
            trained.append("bn1")
        for name, param in self.named_parameters():
            param.requires_grad_(any(name.startswith(stage + ".") for stage in trained))

    def load_pretrained(self, spec: str | Path, strict: bool = True) -> LoadReport:
        """Load a torchvision/timm ResNet state dict (optionally inside ``state_dict``/``model``)."""
        return load_backbone_weights(self, spec, strict=strict, what="pretrained ResNet weights")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


def resnet(depth: int = 50, **kwargs) -> ResNetBackbone:
    """ResNet-18/34/50/101/152 backbone; keyword arguments as :class:`ResNetBackbone`."""
    if depth not in DEPTHS:
        raise UsageError(f"unsupported ResNet depth {depth}; allowed: {sorted(DEPTHS)}")
    block, layers = DEPTHS[depth]
    return ResNetBackbone(block, layers, **kwargs)
