"""SpineNet backbones (Du et al., "SpineNet", arXiv 1912.05027) for RetinaNet.

The network is built from data: a block-spec table (level, block type, two parents, output
flag) and a per-variant scaling row. Widths, resampling paths and the "unused block" merges
are all derived from those two tables, following the tensorflow/tpu detection code
(facts in docs/reference/SPINENET.md §1.2-1.11).

Written by hand because neither torchvision nor timm ships SpineNet.

TensorFlow arithmetic is a set of options (docs/reference/TF_ARITHMETIC.md); the defaults are
PyTorch-style symmetric padding everywhere and the tpu code's one-pool 8x down path:

- ``conv_padding``: strided convs (stem 7x7/2, resampling 3x3/2). tensorflow/tpu pads them
  symmetrically ("symmetric"); TF2 Model Garden uses 'SAME' ("same").
- ``pool_padding``: the stem and resampling max pools. Both TF codes use 'SAME'.
- ``downsample_pools``: after the 3x3/2 conv of a 4x/8x down path, "one" max pool covering the
  rest (tpu: 3x3/2 for 4x, 5x5/4 for 8x) or "repeated" 3x3/2 pools (Model Garden).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, Sequence

import torch
import torch.nn as nn

from scaledet.errors import UsageError
from scaledet.models.common import (
    TPU_RETINANET_NORM,
    ConvNormAct,
    FeatureInfo,
    NormSettings,
    Padding,
    activation,
    check_padding,
    drop_connect,
    max_pool2d,
)

BlockType = Literal["bottleneck", "residual"]
DownsamplePools = Literal["one", "repeated"]
BOTTLENECK: BlockType = "bottleneck"
RESIDUAL: BlockType = "residual"


@dataclass(frozen=True)
class BlockSpec:
    """One scale-permuted block. ``parents`` are global indices: 0 and 1 are the two stem
    groups, spec number k (0-based) in the table has global index k + 2."""

    level: int
    block_type: BlockType
    parents: tuple[int, int]
    is_output: bool


# SpineNet-49 block specification (docs/reference/SPINENET.md §1.4); 96/143/190 reuse it with repeats.
SPINENET49_BLOCK_SPECS: tuple[BlockSpec, ...] = (
    BlockSpec(2, BOTTLENECK, (0, 1), False),
    BlockSpec(4, RESIDUAL, (0, 1), False),
    BlockSpec(3, BOTTLENECK, (2, 3), False),
    BlockSpec(4, BOTTLENECK, (2, 4), False),
    BlockSpec(6, RESIDUAL, (3, 5), False),
    BlockSpec(4, BOTTLENECK, (3, 5), False),
    BlockSpec(5, RESIDUAL, (6, 7), False),
    BlockSpec(7, RESIDUAL, (6, 8), False),
    BlockSpec(5, BOTTLENECK, (8, 9), False),
    BlockSpec(5, BOTTLENECK, (8, 10), False),
    BlockSpec(4, BOTTLENECK, (5, 10), True),
    BlockSpec(3, BOTTLENECK, (4, 10), True),
    BlockSpec(5, BOTTLENECK, (7, 12), True),
    BlockSpec(7, BOTTLENECK, (5, 14), True),
    BlockSpec(6, BOTTLENECK, (12, 14), True),
)

# 3x3-conv width of a block per level before width scaling (FILTER_SIZE_MAP, docs/reference/SPINENET.md §1.3).
BASE_FILTERS: dict[int, int] = {1: 32, 2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256}
STEM_WIDTH = 64  # the 7x7 stem conv is never width-scaled
BOTTLENECK_EXPANSION = 4


@dataclass(frozen=True)
class SpineNetScaling:
    endpoints_num_filters: int
    filter_size_scale: float
    resample_alpha: float
    block_repeats: int


# SCALING_MAP of tensorflow/tpu (docs/reference/SPINENET.md §1.10), except the 49S endpoint
# width: the tpu code says 128, but the published 12.0M params / 33.8B FLOPs and the released
# checkpoint (tensorflow/tpu#767, head conv [3,3,256,128]) need 256-channel endpoints feeding the
# 128-wide head. We default to 256 so the model matches the paper; pass endpoints_num_filters=128
# to follow the tpu code.
# The mobile 49XS/49S/49 (MBConv blocks) are a different architecture and are not built here.
SCALING: dict[str, SpineNetScaling] = {
    "49S": SpineNetScaling(256, 0.65, 0.5, 1),
    "49": SpineNetScaling(256, 1.0, 0.5, 1),
    "96": SpineNetScaling(256, 1.0, 0.5, 2),
    "143": SpineNetScaling(256, 1.0, 1.0, 3),
    "190": SpineNetScaling(512, 1.3, 1.0, 4),
}


@dataclass(frozen=True)
class _Node:
    """Static description of a built block output: where it lives and how wide it is."""

    level: int
    block_type: BlockType
    width: int  # 3x3-conv width C

    @property
    def channels(self) -> int:
        return self.width * BOTTLENECK_EXPANSION if self.block_type == BOTTLENECK else self.width


class _ResidualUnit(nn.Module):
    """Post-activation residual unit: ``act(drop_connect(branch(x)) + shortcut(x))``; the
    shortcut projects (1x1 conv + BN) only when the channel count changes."""

    def __init__(self, branch: nn.Sequential, in_channels: int, out_channels: int, *, norm: NormSettings, act: str,
                 drop_connect_rate: float):
        super().__init__()
        self.branch = branch
        self.shortcut = (ConvNormAct(in_channels, out_channels, 1, norm=norm)
                         if in_channels != out_channels else nn.Identity())
        self.act = activation(act)
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = drop_connect(self.branch(x), self.drop_connect_rate, self.training)
        return self.act(branch + self.shortcut(x))


class Bottleneck(_ResidualUnit):
    """ResNet-v1 bottleneck: 1x1 -> 3x3 -> 1x1 (x4)."""

    def __init__(self, in_channels: int, width: int, *, norm: NormSettings, act: str,
                 drop_connect_rate: float = 0.0):
        out_channels = width * BOTTLENECK_EXPANSION
        branch = nn.Sequential(
            ConvNormAct(in_channels, width, 1, norm=norm, act=act),
            ConvNormAct(width, width, 3, norm=norm, act=act),
            ConvNormAct(width, out_channels, 1, norm=norm),
        )
        super().__init__(branch, in_channels, out_channels, norm=norm, act=act, drop_connect_rate=drop_connect_rate)


class Residual(_ResidualUnit):
    """Basic block: 3x3 -> 3x3."""

    def __init__(self, in_channels: int, width: int, *, norm: NormSettings, act: str,
                 drop_connect_rate: float = 0.0):
        branch = nn.Sequential(
            ConvNormAct(in_channels, width, 3, norm=norm, act=act),
            ConvNormAct(width, width, 3, norm=norm),
        )
        super().__init__(branch, in_channels, width, norm=norm, act=act, drop_connect_rate=drop_connect_rate)


def block_group(block_type: BlockType, in_channels: int, width: int, repeats: int, *,
                norm: NormSettings, act: str, drop_connect_rate: float) -> nn.Sequential:
    """``repeats`` copies of a block; only the first may project its shortcut."""
    block_cls = Bottleneck if block_type == BOTTLENECK else Residual
    out_channels = width * BOTTLENECK_EXPANSION if block_type == BOTTLENECK else width
    blocks = [block_cls(in_channels if i == 0 else out_channels, width, norm=norm, act=act,
                        drop_connect_rate=drop_connect_rate) for i in range(repeats)]
    return nn.Sequential(*blocks)


class Resample(nn.Module):
    """Brings a parent to a target block's level and channel count (docs/reference/SPINENET.md §1.6):
    1x1 squeeze to alpha*C (+BN+act), spatial change, 1x1 to target channels (+BN, no act)."""

    def __init__(self, parent: _Node, target: _Node, alpha: float, *, norm: NormSettings, act: str,
                 conv_padding: Padding = "symmetric", pool_padding: Padding = "symmetric",
                 downsample_pools: DownsamplePools = "one"):
        super().__init__()
        squeezed = int(parent.width * alpha)
        layers: list[nn.Module] = [ConvNormAct(parent.channels, squeezed, 1, norm=norm, act=act)]
        if target.level > parent.level:
            layers.append(ConvNormAct(squeezed, squeezed, 3, 2, norm=norm, act=act, padding=conv_padding))
            ratio = 2 ** (target.level - parent.level)
            if ratio > 2:
                # One Sequential slot for the pools, so parameter names do not depend on their number.
                layers.append(_downsample_pools(ratio // 2, pool_padding, downsample_pools))
        elif target.level < parent.level:
            layers.append(nn.Upsample(scale_factor=float(2 ** (parent.level - target.level)),
                                      mode="nearest"))
        layers.append(ConvNormAct(squeezed, target.channels, 1, norm=norm))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _downsample_pools(ratio: int, padding: Padding, kind: DownsamplePools) -> nn.Sequential:
    """Max pooling by ``ratio`` (2 or more) after the stride-2 conv of a resampling path."""
    if kind == "one":
        # tpu rule: one max pool covers the rest; kernel 3 up to 4x overall, else 5.
        kernel = 3 if ratio <= 2 else 5
        return nn.Sequential(max_pool2d(kernel, ratio, padding=padding))
    if kind == "repeated":  # Model Garden: 3x3/2 pools until the level is reached
        return nn.Sequential(*(max_pool2d(3, 2, padding=padding) for _ in range(int(math.log2(ratio)))))
    raise UsageError(f"SpineNet: unknown downsample_pools {kind!r}; allowed: one, repeated")


class ScalePermutedBlock(nn.Module):
    """Fuses two resampled parents (plus unused same-shape blocks for outputs), activates,
    then runs the block group."""

    def __init__(self, parents: tuple[int, int], resamples: Sequence[Resample],
                 unused_inputs: tuple[int, ...], group: nn.Sequential, act: str):
        super().__init__()
        self.parents = parents
        self.unused_inputs = unused_inputs
        self.resamples = nn.ModuleList(resamples)
        self.act = activation(act)
        self.group = group

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        fused = self.resamples[0](features[self.parents[0]]) + self.resamples[1](features[self.parents[1]])
        for index in self.unused_inputs:
            fused = fused + features[index]
        return self.group(self.act(fused))


def _variance_scaling_init(module: nn.Module) -> None:
    """TF1 variance_scaling_initializer defaults: scale 1, fan_in, normal truncated at 2 std."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
            fan_in = m.weight[0].numel()
            # 0.8796... is the std of a unit normal truncated to [-2, 2]; TF divides by it.
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)


class SpineNet(nn.Module):
    """Scale-permuted backbone returning P3..P7 (``endpoints_num_filters`` channels each)."""

    min_level = 3
    max_level = 7

    def __init__(self, *, block_specs: Sequence[BlockSpec] = SPINENET49_BLOCK_SPECS,
                 endpoints_num_filters: int = 256, filter_size_scale: float = 1.0,
                 resample_alpha: float = 0.5, block_repeats: int = 1, activation: str = "swish",
                 drop_connect_rate: float = 0.0, norm: NormSettings = TPU_RETINANET_NORM,
                 endpoint_activation: bool = True, conv_padding: Padding = "symmetric",
                 pool_padding: Padding = "symmetric", downsample_pools: DownsamplePools = "one"):
        super().__init__()
        check_padding(conv_padding, "SpineNet conv_padding")
        check_padding(pool_padding, "SpineNet pool_padding")
        if downsample_pools not in ("one", "repeated"):
            raise UsageError(f"SpineNet: unknown downsample_pools {downsample_pools!r}; allowed: one, repeated")
        if block_repeats < 1:
            raise UsageError(f"SpineNet: block_repeats must be >= 1, got {block_repeats}")
        if not 0.0 <= drop_connect_rate < 1.0:
            raise UsageError(f"SpineNet: drop_connect_rate must be in [0, 1), got {drop_connect_rate}")
        act = activation  # the argument shadows common.activation inside this method
        self.activation = act

        def width(level: int) -> int:
            return int(BASE_FILTERS[level] * filter_size_scale)

        self.stem = nn.Sequential(
            ConvNormAct(3, STEM_WIDTH, 7, 2, norm=norm, act=act, padding=conv_padding),
            max_pool2d(3, 2, padding=pool_padding),
        )
        tf_options = dict(conv_padding=conv_padding, pool_padding=pool_padding,
                          downsample_pools=downsample_pools)
        stem_node = _Node(2, BOTTLENECK, width(2))
        # Two L2 bottleneck groups; they are the candidate parents 0 and 1. No drop-connect.
        self.stem_groups = nn.ModuleList([
            block_group(BOTTLENECK, STEM_WIDTH, stem_node.width, block_repeats, norm=norm, act=act,
                        drop_connect_rate=0.0),
            block_group(BOTTLENECK, stem_node.channels, stem_node.width, block_repeats, norm=norm,
                        act=act, drop_connect_rate=0.0),
        ])
        nodes = [stem_node, stem_node]
        consumers = [0, 0]
        blocks = []
        num_blocks = len(block_specs)
        for k, spec in enumerate(block_specs):
            index = k + 2
            if any(not 0 <= p < index for p in spec.parents):
                raise UsageError(f"SpineNet: block {index} has parents {spec.parents}; "
                                 f"parents must be earlier blocks (0..{index - 1})")
            target = _Node(spec.level, spec.block_type, width(spec.level))
            resamples = [Resample(nodes[p], target, resample_alpha, norm=norm, act=act, **tf_options)
                         for p in spec.parents]
            # tpu order: the parents count as consumed before looking for unused blocks.
            for p in spec.parents:
                consumers[p] += 1
            unused: tuple[int, ...] = ()
            if spec.is_output:
                # A block nobody consumes is merged raw into a later output block of the same
                # level and channel count (rule inherited from NAS-FPN).
                unused = tuple(j for j in range(index) if consumers[j] == 0
                               and nodes[j].level == target.level
                               and nodes[j].channels == target.channels)
                for j in unused:
                    consumers[j] += 1
            # Stochastic depth grows linearly with depth: block k+1 of N gets rate * (k+1) / N.
            rate = drop_connect_rate * (k + 1) / num_blocks
            group = block_group(spec.block_type, target.channels, target.width, block_repeats,
                                norm=norm, act=act, drop_connect_rate=rate)
            blocks.append(ScalePermutedBlock(spec.parents, resamples, unused, group, act))
            nodes.append(target)
            consumers.append(0)
        self.blocks = nn.ModuleList(blocks)

        self.output_indices: list[int] = []
        endpoints = []
        for level in range(self.min_level, self.max_level + 1):
            outputs = [k + 2 for k, s in enumerate(block_specs) if s.is_output and s.level == level]
            if len(outputs) != 1:
                raise UsageError(f"SpineNet: the block specs must have exactly one output block at "
                                 f"level {level}, found {len(outputs)}")
            self.output_indices.append(outputs[0])
            endpoints.append(ConvNormAct(nodes[outputs[0]].channels, endpoints_num_filters, 1,
                                         norm=norm, act=act if endpoint_activation else None))
        self.endpoints = nn.ModuleList(endpoints)
        self.feature_info = [FeatureInfo(endpoints_num_filters, 2 ** level)
                             for level in range(self.min_level, self.max_level + 1)]
        self.size_divisor = 2 ** self.max_level
        _variance_scaling_init(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            h, w = x.shape[-2:]
            if h % self.size_divisor or w % self.size_divisor:
                raise UsageError(f"SpineNet: input height and width must be multiples of "
                                 f"{self.size_divisor}, got {h}x{w}; pad the images first")
        x = self.stem(x)
        features: list[torch.Tensor] = []
        for group in self.stem_groups:
            x = group(x)
            features.append(x)
        for block in self.blocks:
            features.append(block(features))
        return [endpoint(features[i]) for endpoint, i in zip(self.endpoints, self.output_indices)]


def spinenet(variant: str, **overrides) -> SpineNet:
    """Build a published variant ("49S", "49", "96", "143", "190"). ``overrides`` may replace
    any scaling field (endpoints_num_filters, filter_size_scale, resample_alpha, block_repeats)
    or set other SpineNet arguments (activation, drop_connect_rate, norm, ...)."""
    if variant not in SCALING:
        raise UsageError(f"unknown SpineNet variant {variant!r}; known: {', '.join(SCALING)} "
                         "(the mobile MBConv SpineNets are not implemented)")
    # A scaling field given as None keeps the variant's value.
    scaling_fields = {name: value for name in SpineNetScaling.__dataclass_fields__
                      if (value := overrides.pop(name, None)) is not None}
    scaling = replace(SCALING[variant], **scaling_fields)
    return SpineNet(endpoints_num_filters=scaling.endpoints_num_filters,
                    filter_size_scale=scaling.filter_size_scale,
                    resample_alpha=scaling.resample_alpha, block_repeats=scaling.block_repeats,
                    **overrides)
