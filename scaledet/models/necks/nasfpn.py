"""NAS-FPN (Ghiasi et al., arXiv 1904.07392): stacked merging cells over P3..P7.

The graph is data: ``NASFPN_CELLS`` is the published sequence of seven merging cells
(docs/reference/NASFPN.md §2.2, tensorflow/tpu ``NASFPN_BLOCK_SPECS``). Nodes 0..4 are a stack's inputs
P3..P7; cell k appends node 5 + k. Written by hand because neither torchvision nor timm ships it.

Per node: resample both inputs to the cell's level (max pool down with kernel = stride = 2^k,
nearest up), combine them (sum, or global-pooling attention), and if the cell is an output add
every earlier node of that level that nobody consumed; then ReLU -> 3x3 conv (bias) -> BN.

Conventions that differ between implementations are options (docs/reference/NASFPN.md §3):
- ``attention="max_coarse"`` (tensorflow/tpu, TF2): coarse + fine * sigmoid(globalmax(coarse));
  ``"avg_fine"`` (mmdetection, MindSpore): fine + coarse * sigmoid(globalavg(fine)).
  "coarse"/"fine" refer to the inputs' levels before resampling.
- ``extra_levels="pool"`` (TPU): P6/P7 by max pooling only; ``"conv_pool"`` (mmdet): 1x1 conv + BN,
  then max pool.
- ``conv_bias=False``: every conv without a bias (the MindSpore port's; its BN follows anyway).
- BN defaults to TPU's decay 0.997 / eps 1e-4. Conv init is kaiming-uniform a=1 (mmdet's
  caffe2-xavier); TPU uses TF's glorot-uniform.
- At widths other than 256 every cell conv is width -> width (the paper's "7@384" layout);
  TF2 Model Garden instead keeps 256-channel nodes with 1x1 resampling convs (≈93M vs ≈104M
  parameters for R-50 7@384, docs/reference/NASFPN.md §5). ``cell_input_width=256`` builds that layout: every
  cell input (and absorbed extra) whose width differs gets a 1x1 conv (bias) + BN to 256 before
  it is resampled, and the cell conv maps 256 -> width. At width 256 both layouts are the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaledet.errors import UsageError
from scaledet.models.common import TPU_RETINANET_NORM, FeatureInfo, NormSettings


@dataclass(frozen=True)
class MergingCell:
    level: int
    op: Literal["sum", "attention"]
    inputs: tuple[int, int]
    is_output: bool


NASFPN_CELLS: tuple[MergingCell, ...] = (
    MergingCell(4, "attention", (1, 3), False),  # node 5: P4_1
    MergingCell(4, "sum", (1, 5), False),  # node 6: P4_2
    MergingCell(3, "sum", (0, 6), True),  # node 7: P3 out
    MergingCell(4, "sum", (6, 7), True),  # node 8: P4 out
    MergingCell(5, "attention", (7, 8), True),  # node 9: P5 out (+ unused P5)
    MergingCell(7, "attention", (6, 9), True),  # node 10: P7 out (+ unused P7)
    MergingCell(6, "attention", (9, 10), True),  # node 11: P6 out
)

Attention = Literal["max_coarse", "avg_fine"]


@dataclass(frozen=True)
class _Node:
    """A cell resolved against the graph: input levels and the unused nodes it absorbs."""

    level: int
    op: str
    inputs: tuple[int, int]
    input_levels: tuple[int, int]
    extra: tuple[int, ...]


def plan_cells(cells: Sequence[MergingCell], input_levels: Sequence[int]) -> tuple[list[_Node], dict[int, int]]:
    """Resolve the cell table: per node its inputs and "unused" extras; and level -> output node.

    Follows the TPU rule: an output cell also sums every earlier node of its level that had no
    consumer yet (counting its own inputs as consumed first).
    """
    levels = list(input_levels)
    consumers = [0] * len(levels)
    nodes: list[_Node] = []
    for k, cell in enumerate(cells):
        for i in cell.inputs:
            if not 0 <= i < len(levels):
                raise UsageError(f"cell {k} reads node {i}, but only nodes 0..{len(levels) - 1} exist")
            consumers[i] += 1
        if cell.level not in input_levels:
            raise UsageError(f"cell {k} outputs level {cell.level}, outside the pyramid {list(input_levels)}")
        if cell.op not in ("sum", "attention"):
            raise UsageError(f"cell {k}: unknown op {cell.op!r}; allowed: sum, attention")
        extra: list[int] = []
        if cell.is_output:
            for j, (lvl, used) in enumerate(zip(levels, consumers)):
                if used == 0 and lvl == cell.level:
                    consumers[j] += 1
                    extra.append(j)
        nodes.append(_Node(cell.level, cell.op, cell.inputs,
                           (levels[cell.inputs[0]], levels[cell.inputs[1]]), tuple(extra)))
        levels.append(cell.level)
        consumers.append(0)
    first = len(input_levels)
    outputs = {cell.level: first + k for k, cell in enumerate(cells) if cell.is_output}
    missing = sorted(set(input_levels) - set(outputs))
    if missing:
        raise UsageError(f"the cell table outputs no node for level(s) {missing}")
    return nodes, outputs


def resample(x: torch.Tensor, from_level: int, to_level: int, size: Sequence[int]) -> torch.Tensor:
    """Max pool (kernel = stride = 2^k, partial windows kept like TF 'SAME') or nearest upsample."""
    if to_level > from_level:
        k = 2 ** (to_level - from_level)
        x = F.max_pool2d(x, k, k, ceil_mode=True)
        if tuple(x.shape[-2:]) != tuple(size):  # sizes not made by repeated ceil-halving
            x = F.adaptive_max_pool2d(x, tuple(size))
        return x
    if to_level < from_level:
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return x


def global_attention(x0: torch.Tensor, level0: int, x1: torch.Tensor, level1: int, kind: Attention) -> torch.Tensor:
    """Global-pooling merge of two maps already resampled to the same size."""
    coarse, fine = (x0, x1) if level0 >= level1 else (x1, x0)
    if kind == "max_coarse":
        return coarse + fine * torch.sigmoid(coarse.amax(dim=(2, 3), keepdim=True))
    if kind == "avg_fine":
        return fine + coarse * torch.sigmoid(fine.mean(dim=(2, 3), keepdim=True))
    raise UsageError(f"unknown attention {kind!r}; allowed: max_coarse, avg_fine")


def _conv_bn(cin: int, cout: int, kernel: int, norm: NormSettings,
             bias: bool = True) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv, norm.make(cout)


class _NodeOp(nn.Sequential):
    """ReLU -> 3x3 conv with bias -> BN (no activation)."""

    def __init__(self, cin: int, width: int, norm: NormSettings, bias: bool = True):
        super().__init__(nn.ReLU(), *_conv_bn(cin, width, 3, norm, bias))


class NASFPNStack(nn.Module):
    """One NAS-FPN module: P3..P7 at ``width`` in, P3..P7 out; its own weights."""

    def __init__(self, width: int, levels: Sequence[int], cells: Sequence[MergingCell], *,
                 attention: Attention, norm: NormSettings, cell_input_width: int | None = None,
                 conv_bias: bool = True):
        super().__init__()
        self.levels = list(levels)
        self.nodes, self.outputs = plan_cells(cells, self.levels)
        self.attention = attention
        inner = cell_input_width or width
        self.ops = nn.ModuleList(_NodeOp(inner, width, norm, conv_bias) for _ in self.nodes)
        # Model Garden layout: per node, one 1x1 conv + BN per input (the two, then the extras).
        self.input_projections = nn.ModuleList(
            nn.ModuleList(nn.Sequential(*_conv_bn(width, inner, 1, norm, conv_bias))
                          for _ in (*node.inputs, *node.extra))
            for node in self.nodes) if inner != width else None

    def forward(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        sizes = {lvl: x.shape[-2:] for lvl, x in zip(self.levels, pyramid)}
        feats = list(pyramid)
        levels = list(self.levels)
        for n, (node, op) in enumerate(zip(self.nodes, self.ops)):
            size = sizes[node.level]
            projections = self.input_projections[n] if self.input_projections is not None else None

            def take(k: int, index: int) -> torch.Tensor:
                x = feats[index] if projections is None else projections[k](feats[index])
                return resample(x, levels[index], node.level, size)

            (i0, i1), (l0, l1) = node.inputs, node.input_levels
            x0, x1 = take(0, i0), take(1, i1)
            merged = x0 + x1 if node.op == "sum" else global_attention(x0, l0, x1, l1, self.attention)
            for k, j in enumerate(node.extra, start=2):
                merged = merged + take(k, j)
            feats.append(op(merged))
            levels.append(node.level)
        return [feats[self.outputs[lvl]] for lvl in self.levels]


class NASFPN(nn.Module):
    """Input projection + P6/P7 + ``num_stacks`` NAS-FPN modules (no weight sharing)."""

    def __init__(self, in_features: list[FeatureInfo], width: int = 256, num_stacks: int = 7, *,
                 max_level: int = 7, cells: Sequence[MergingCell] = NASFPN_CELLS,
                 attention: Attention = "max_coarse", extra_levels: Literal["pool", "conv_pool"] = "pool",
                 norm: NormSettings = TPU_RETINANET_NORM, cell_input_width: int | None = None,
                 conv_bias: bool = True):
        super().__init__()
        if attention not in ("max_coarse", "avg_fine"):
            raise UsageError(f"unknown attention {attention!r}; allowed: max_coarse, avg_fine")
        if extra_levels not in ("pool", "conv_pool"):
            raise UsageError(f"unknown extra_levels {extra_levels!r}; allowed: pool, conv_pool")
        if num_stacks < 1:
            raise UsageError(f"num_stacks must be >= 1, got {num_stacks}")
        in_levels = [f.level for f in in_features]
        if in_levels != list(range(in_levels[0], in_levels[0] + len(in_levels))):
            raise UsageError(f"NAS-FPN needs consecutive input levels, got {in_levels}")
        levels = list(range(in_levels[0], max_level + 1))
        self.conv_bias = conv_bias
        self.projections = nn.ModuleList(self._projection(f.channels, width, norm) for f in in_features)
        num_extra = max_level - in_levels[-1]
        self.extra = nn.ModuleList(
            (self._projection(width, width, norm, always=True) if extra_levels == "conv_pool" else nn.Identity())
            for _ in range(num_extra))
        if cell_input_width is not None and cell_input_width < 1:
            raise UsageError(f"cell_input_width must be positive or None, got {cell_input_width}")
        self.stacks = nn.ModuleList(NASFPNStack(width, levels, cells, attention=attention, norm=norm,
                                                cell_input_width=cell_input_width, conv_bias=conv_bias)
                                    for _ in range(num_stacks))
        self.feature_info = [FeatureInfo(width, 2 ** lvl) for lvl in levels]

    def _projection(self, cin: int, width: int, norm: NormSettings, always: bool = False) -> nn.Module:
        if cin == width and not always:
            return nn.Identity()
        return nn.Sequential(*_conv_bn(cin, width, 1, norm, self.conv_bias))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        pyramid = [proj(x) for proj, x in zip(self.projections, features)]
        for op in self.extra:
            pyramid.append(F.max_pool2d(op(pyramid[-1]), 2, 2, ceil_mode=True))
        for stack in self.stacks:
            pyramid = stack(pyramid)
        return pyramid
