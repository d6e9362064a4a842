"""Name mappings for RetinaNet checkpoints of the two TensorFlow codes, derived from structure.

Both mappings walk the scaledet parts (SpineNet or ResNet + NAS-FPN, and the RetinaHead) in the
order the TF code creates its layers, and name each layer the way that code names it:

* **tpu** (tensorflow/tpu ``models/official/detection``, TF1 layers): a variable is
  ``<scope>/conv2d_<k>/kernel`` or ``<scope>/batch_normalization_<k>/<var>``, where ``k`` counts
  the convs (BNs) created in that scope so far. Scopes: ``spinenet`` (stem, stem blocks,
  endpoints), ``spinenet/sub_policy<i>/resample_with_alpha_resample_<i>_<j>`` and
  ``spinenet/sub_policy<i>/scale_permuted_block_<i+2>``; head ``retinanet/class_net/class-<i>``,
  BN ``class-<i>-<level>``, ``class-predict`` (``box_net/box-...`` alike). A block creates its
  projection shortcut before its main path.
* **garden** (TF2 Model Garden, ``tf.train.Checkpoint(model=...)``): backbone and decoder are Keras
  functional models, saved as ``model/_backbone/layer_with_weights-<n>/...`` where ``n`` follows
  Keras' topological sort, not the code. The order the code created the layers in is kept in each
  variable's own name (``conv2d_44/kernel``, ``bottleneck_block_6/...``: one counter per layer
  class), which the checkpoint's object graph records. Layers of each class are therefore paired
  with the structure by that counter. Blocks name their parts (``_shortcut``, ``_norm0``,
  ``_conv1``, ``_norm1``, ...); the head names everything (``_cls_convs/<i>``,
  ``_cls_norms/<level index>/<i>``, ``_classifier``, ``_box_*``, ``_box_regressor``).

The predictors' output channels are permuted to scaledet's anchor ratio order and (dx, dy, dw, dh)
box coordinates (docs/reference/TF_ARITHMETIC.md); everything else is copied (conv kernels HWIO ->
OIHW). Checkpoint entries that are not model weights (step counters, optimizer slots, the object
graph) are listed as ignored, never silently dropped: everything else must map.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch.nn as nn

from scaledet.convert.tf_mapping import (
    TF_BOX_ORDER_TO_OURS,
    Assignment,
    MappingError,
    bn_assignments,
    conv_assignments,
    predictor_permutation,
)
from scaledet.models.backbones.resnet import ResNetBackbone
from scaledet.models.backbones.spinenet import Bottleneck, Resample, SpineNet
from scaledet.models.common import ConvNormAct, NormSettings
from scaledet.models.heads.retina_head import RetinaHead
from scaledet.models.necks.nasfpn import NASFPN

__all__ = ["GARDEN_ASPECT_RATIOS", "GARDEN_NASFPN_OPTIONS", "GARDEN_NORM", "GARDEN_RESNET_OPTIONS",
           "GARDEN_SPINENET_OPTIONS", "TPU_ASPECT_RATIOS", "TPU_NORM", "TPU_SPINENET_OPTIONS", "garden_ignored",
           "garden_retinanet_mapping", "tpu_ignored", "tpu_retinanet_mapping"]

TPU_ASPECT_RATIOS = (1.0, 2.0, 0.5)
GARDEN_ASPECT_RATIOS = (0.5, 1.0, 2.0)

# Constructor options that make scaledet's parts compute what each TF code computes
# (docs/reference/TF_ARITHMETIC.md). BN settings go to every part (backbone, neck, head).
TPU_NORM = NormSettings.from_tf(0.997, 1e-4)
GARDEN_NORM = NormSettings.from_tf(0.99, 1e-3)
TPU_SPINENET_OPTIONS = {"conv_padding": "symmetric", "pool_padding": "same", "downsample_pools": "one"}
GARDEN_SPINENET_OPTIONS = {"conv_padding": "same", "pool_padding": "same", "downsample_pools": "repeated"}
GARDEN_RESNET_OPTIONS = {"padding": "same"}
# Model Garden resamples NAS-FPN cell inputs to 256 channels (a no-op when the width is 256).
GARDEN_NASFPN_OPTIONS = {"cell_input_width": 256, "attention": "max_coarse", "extra_levels": "pool"}
_GARDEN_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


# -- the structure, in TF creation order ---------------------------------------------------------
@dataclass(frozen=True)
class ConvBN:
    conv: str  # state-dict prefix of the conv
    bn: str  # ... and of its BatchNorm
    bias: bool = False


def _cna(prefix: str) -> ConvBN:
    """A scaledet ConvNormAct (conv at ``.0``, BN at ``.1``)."""
    return ConvBN(f"{prefix}.0", f"{prefix}.1")


@dataclass(frozen=True)
class BlockPlan:
    kind: str  # "bottleneck" | "residual"
    shortcut: ConvBN | None
    convs: tuple[ConvBN, ...]


@dataclass(frozen=True)
class SpineNetPlan:
    stem: ConvBN
    stem_blocks: tuple[BlockPlan, ...]
    resamples: tuple[tuple[tuple[ConvBN, ...], ...], ...]  # per spine block, per parent
    blocks: tuple[tuple[BlockPlan, ...], ...]  # per spine block, per repeat
    endpoints: tuple[ConvBN, ...]  # levels 3..7


def _spinenet_block(block: nn.Module, prefix: str) -> BlockPlan:
    kind = "bottleneck" if isinstance(block, Bottleneck) else "residual"
    shortcut = _cna(f"{prefix}.shortcut") if isinstance(block.shortcut, ConvNormAct) else None
    return BlockPlan(kind, shortcut, tuple(_cna(f"{prefix}.branch.{i}") for i in range(len(block.branch))))


def spinenet_plan(backbone: SpineNet, prefix: str = "backbone") -> SpineNetPlan:
    def resample_convs(resample: Resample, at: str) -> tuple[ConvBN, ...]:
        return tuple(_cna(f"{at}.layers.{i}") for i, m in enumerate(resample.layers) if isinstance(m, ConvNormAct))

    return SpineNetPlan(
        stem=_cna(f"{prefix}.stem.0"),
        stem_blocks=tuple(_spinenet_block(b, f"{prefix}.stem_groups.{g}.{r}")
                          for g, group in enumerate(backbone.stem_groups) for r, b in enumerate(group)),
        resamples=tuple(tuple(resample_convs(r, f"{prefix}.blocks.{k}.resamples.{j}")
                              for j, r in enumerate(block.resamples))
                        for k, block in enumerate(backbone.blocks)),
        blocks=tuple(tuple(_spinenet_block(b, f"{prefix}.blocks.{k}.group.{r}") for r, b in enumerate(block.group))
                     for k, block in enumerate(backbone.blocks)),
        endpoints=tuple(_cna(f"{prefix}.endpoints.{i}") for i in range(len(backbone.endpoints))),
    )


def _resnet_blocks(backbone: ResNetBackbone, prefix: str) -> list[BlockPlan]:
    blocks = []
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(backbone, stage)):
            at = f"{prefix}.{stage}.{i}"
            shortcut = ConvBN(f"{at}.downsample.0", f"{at}.downsample.1") if block.downsample is not None else None
            count = 3 if hasattr(block, "conv3") else 2
            blocks.append(BlockPlan("bottleneck" if count == 3 else "residual", shortcut,
                                    tuple(ConvBN(f"{at}.conv{c}", f"{at}.bn{c}") for c in range(1, count + 1))))
    return blocks


# -- tensorflow/tpu ----------------------------------------------------------------------------
class _Tf1Scope:
    """Names layers like TF1 ``tf.layers`` inside one variable scope (a counter per layer type)."""

    def __init__(self, scope: str, out: dict[str, Assignment]):
        self.scope, self.out = scope, out
        self.convs = self.norms = 0

    @staticmethod
    def _name(base: str, index: int) -> str:
        return base if index == 0 else f"{base}_{index}"

    def conv_bn(self, layer: ConvBN) -> None:
        self.out.update(conv_assignments(f"{self.scope}/{self._name('conv2d', self.convs)}", layer.conv))
        self.out.update(bn_assignments(f"{self.scope}/{self._name('batch_normalization', self.norms)}", layer.bn))
        self.convs += 1
        self.norms += 1

    def block(self, block: BlockPlan) -> None:
        for layer in ((block.shortcut,) if block.shortcut else ()) + block.convs:
            self.conv_bn(layer)


def _head_permutations(head: RetinaHead, aspect_ratios: Sequence[float], tf_aspect_ratios: Sequence[float],
                       class_channels: Sequence[int] | None, tf_num_classes: int | None):
    num_scales, remainder = divmod(head.num_anchors, len(aspect_ratios))
    if remainder:
        raise MappingError(f"the head has {head.num_anchors} anchors per location, not a multiple of "
                           f"{len(aspect_ratios)} aspect ratios")
    if class_channels is None:
        cls = predictor_permutation(num_scales, aspect_ratios, tf_aspect_ratios, head.num_classes)
    else:
        # A selection of TF's class channels: both TF codes drop channel 0 (the background) after
        # the sigmoid, and COCO's unused ids may go too (docs/reference/TF_ARITHMETIC.md §4).
        if len(class_channels) != head.num_classes:
            raise MappingError(f"{len(class_channels)} class channels are kept, but the head has "
                               f"{head.num_classes} classes")
        cls = predictor_permutation(num_scales, aspect_ratios, tf_aspect_ratios, tf_num_classes, class_channels)
    box = predictor_permutation(num_scales, aspect_ratios, tf_aspect_ratios, 4, TF_BOX_ORDER_TO_OURS)
    return cls, box


def tpu_retinanet_mapping(backbone: SpineNet, head: RetinaHead, *,
                          aspect_ratios: Sequence[float] = TPU_ASPECT_RATIOS,
                          tf_aspect_ratios: Sequence[float] = TPU_ASPECT_RATIOS,
                          class_channels: Sequence[int] | None = None,
                          tf_num_classes: int | None = None) -> dict[str, Assignment]:
    """TF variable name -> assignment for a tensorflow/tpu SpineNet RetinaNet.

    ``aspect_ratios``: the order of the scaledet model's anchors; ``tf_aspect_ratios``: the
    checkpoint's (the tpu default is [1.0, 2.0, 0.5]). ``class_channels``: the TF class channel
    of each of the model's classes when it keeps only some of the checkpoint's
    ``tf_num_classes`` (None: all, in TF's order).
    """
    out: dict[str, Assignment] = {}
    plan = spinenet_plan(backbone)
    top = _Tf1Scope("spinenet", out)
    top.conv_bn(plan.stem)
    for block in plan.stem_blocks:
        top.block(block)
    for k, (resamples, blocks) in enumerate(zip(plan.resamples, plan.blocks)):
        for j, layers in enumerate(resamples):
            scope = _Tf1Scope(f"spinenet/sub_policy{k}/resample_with_alpha_resample_{k}_{j}", out)
            for layer in layers:
                scope.conv_bn(layer)
        scope = _Tf1Scope(f"spinenet/sub_policy{k}/scale_permuted_block_{k + 2}", out)
        for block in blocks:
            scope.block(block)
    for layer in plan.endpoints:
        top.conv_bn(layer)

    cls_index, box_index = _head_permutations(head, aspect_ratios, tf_aspect_ratios, class_channels, tf_num_classes)
    levels = [s.bit_length() - 1 for s in head.strides]
    for tower, module, net, name, index in (("cls_tower", head.cls_tower, "class_net", "class", cls_index),
                                            ("box_tower", head.box_tower, "box_net", "box", box_index)):
        at = f"head.{tower}"
        convs = module.convs
        for i in range(len(convs)):
            out.update(conv_assignments(f"retinanet/{net}/{name}-{i}", f"{at}.convs.{i}", bias=True))
            for li, level in enumerate(levels):
                out.update(bn_assignments(f"retinanet/{net}/{name}-{i}-{level}", f"{at}.norms.{li}.{i}"))
        out.update(conv_assignments(f"retinanet/{net}/{name}-predict", f"{at}.predictor", bias=True,
                                    out_index=index))
    return out


def tpu_ignored(names: Iterable[str]) -> list[str]:
    """Entries of a tpu checkpoint that are training state, not weights."""
    return [n for n in names if n == "global_step" or n.endswith("/Momentum")
            or "ExponentialMovingAverage" in n]


# -- TF2 Model Garden --------------------------------------------------------------------------
_FUNCTIONAL_KEY = re.compile(r"^model/(_backbone|_decoder)/layer_with_weights-(\d+)/(.+)" + re.escape(_GARDEN_SUFFIX) + "$")
_KERAS_NAME = re.compile(r"^(.+?)(?:_(\d+))?$")


@dataclass
class _KerasLayer:
    path: str  # e.g. model/_backbone/layer_with_weights-12
    attributes: set[str]
    layer_name: str  # e.g. conv2d_44

    @property
    def kind(self) -> str:
        if "kernel" in self.attributes:
            return "conv"
        if "gamma" in self.attributes:
            return "bn"
        if "_conv3/kernel" in self.attributes:
            return "bottleneck"
        if "_conv1/kernel" in self.attributes:
            return "residual"
        return "unknown"

    @property
    def creation_index(self) -> int:
        counter = _KERAS_NAME.match(self.layer_name).group(2)
        return int(counter) if counter else 0


def _functional_layers(variable_names: Mapping[str, str], part: str, source: str) -> dict[str, list[_KerasLayer]]:
    """The weight layers of one functional model, per kind, in the order the code created them."""
    layers: dict[str, _KerasLayer] = {}
    for key, full_name in variable_names.items():
        match = _FUNCTIONAL_KEY.match(key)
        if not match or match.group(1) != part:
            continue
        path = f"model/{part}/layer_with_weights-{match.group(2)}"
        if not full_name:
            raise MappingError(f"{source}: {key} has no variable name in the checkpoint's object graph; "
                               "Model Garden checkpoints need it to order the layers")
        layer = layers.setdefault(path, _KerasLayer(path, set(), full_name.split("/")[0]))
        layer.attributes.add(match.group(3))
    by_kind: dict[str, list[_KerasLayer]] = defaultdict(list)
    for layer in layers.values():
        by_kind[layer.kind].append(layer)
    for kind, kind_layers in by_kind.items():
        # Keras counts per layer name: layers of one kind under two names could not be ordered.
        names = sorted({_KERAS_NAME.match(layer.layer_name).group(1) for layer in kind_layers})
        if len(names) > 1:
            raise MappingError(f"{source}: {part} has {kind} layers named {', '.join(names)}; "
                               "their creation order cannot be recovered")
        kind_layers.sort(key=lambda layer: layer.creation_index)
    return by_kind


def _pair(expected: dict[str, list], found: dict[str, list[_KerasLayer]], part: str, source: str):
    problems = [f"{len(found.get(kind, []))} {kind} layers where the model needs {len(items)}"
                for kind, items in expected.items() if len(found.get(kind, [])) != len(items)]
    problems += [f"{len(layers)} layers of an unexpected kind {kind!r} ({layers[0].path}, ...)"
                 for kind, layers in found.items() if kind not in expected and layers]
    if problems:
        raise MappingError(f"{source}: {part} does not match the model: " + "; ".join(problems))
    for kind, items in expected.items():
        yield from ((kind, layer, item) for layer, item in zip(found.get(kind, []), items))


def _garden_block(path: str, block: BlockPlan) -> dict[str, Assignment]:
    out: dict[str, Assignment] = {}
    if block.shortcut:
        out.update(conv_assignments(f"{path}/_shortcut", block.shortcut.conv, suffix=_GARDEN_SUFFIX))
        out.update(bn_assignments(f"{path}/_norm0", block.shortcut.bn, suffix=_GARDEN_SUFFIX))
    for i, layer in enumerate(block.convs, start=1):
        out.update(conv_assignments(f"{path}/_conv{i}", layer.conv, suffix=_GARDEN_SUFFIX))
        out.update(bn_assignments(f"{path}/_norm{i}", layer.bn, suffix=_GARDEN_SUFFIX))
    return out


def _garden_functional(expected_convs: list[ConvBN], blocks: list[BlockPlan], variable_names: Mapping[str, str],
                       part: str, source: str) -> dict[str, Assignment]:
    expected: dict[str, list] = {"conv": expected_convs, "bn": expected_convs}
    for kind in ("bottleneck", "residual"):
        kind_blocks = [b for b in blocks if b.kind == kind]
        if kind_blocks:
            expected[kind] = kind_blocks
    found = _functional_layers(variable_names, part, source)
    out: dict[str, Assignment] = {}
    for kind, layer, item in _pair(expected, found, part, source):
        if kind == "conv":
            out.update(conv_assignments(layer.path, item.conv, bias=item.bias, suffix=_GARDEN_SUFFIX))
        elif kind == "bn":
            out.update(bn_assignments(layer.path, item.bn, suffix=_GARDEN_SUFFIX))
        else:
            out.update(_garden_block(layer.path, item))
    return out


def _nasfpn_layers(neck: NASFPN, prefix: str = "neck") -> list[ConvBN]:
    """NAS-FPN's conv + BN pairs in Model Garden's creation order."""
    if any(not isinstance(extra, nn.Identity) for extra in neck.extra):
        raise MappingError("Model Garden's NAS-FPN makes P6/P7 by max pooling only (extra_levels='pool')")
    layers = [ConvBN(f"{prefix}.projections.{i}.0", f"{prefix}.projections.{i}.1", bias=True)
              for i, p in enumerate(neck.projections) if not isinstance(p, nn.Identity)]
    for s, stack in enumerate(neck.stacks):
        for n in range(len(stack.nodes)):
            if stack.input_projections is not None:
                layers += [ConvBN(f"{prefix}.stacks.{s}.input_projections.{n}.{k}.0",
                                  f"{prefix}.stacks.{s}.input_projections.{n}.{k}.1", bias=True)
                           for k in range(len(stack.input_projections[n]))]
            layers.append(ConvBN(f"{prefix}.stacks.{s}.ops.{n}.1", f"{prefix}.stacks.{s}.ops.{n}.2", bias=True))
    return layers


def garden_retinanet_mapping(backbone: nn.Module, neck: NASFPN | None, head: RetinaHead,
                             variable_names: Mapping[str, str], *, source: str = "checkpoint",
                             aspect_ratios: Sequence[float] = TPU_ASPECT_RATIOS,
                             tf_aspect_ratios: Sequence[float] = GARDEN_ASPECT_RATIOS,
                             class_channels: Sequence[int] | None = None,
                             tf_num_classes: int | None = None) -> dict[str, Assignment]:
    """TF variable name -> assignment for a Model Garden RetinaNet (SpineNet, or ResNet + NAS-FPN).

    ``variable_names``: checkpoint key -> the variable's own name, from the object graph
    (:meth:`TFCheckpoint.variable_names`); it orders the functional models' layers. The other
    arguments as :func:`tpu_retinanet_mapping`'s.
    """
    if isinstance(backbone, SpineNet):
        if neck is not None:
            raise MappingError("Model Garden's SpineNet RetinaNet has no decoder (identity); got a neck")
        plan = spinenet_plan(backbone)
        convs = [plan.stem] + [layer for per_block in plan.resamples for layers in per_block for layer in layers]
        convs += list(plan.endpoints)
        blocks = list(plan.stem_blocks) + [b for per_block in plan.blocks for b in per_block]
    elif isinstance(backbone, ResNetBackbone):
        if not isinstance(neck, NASFPN):
            raise MappingError("a ResNet backbone maps only with a NAS-FPN decoder")
        convs = [ConvBN("backbone.conv1", "backbone.bn1")]
        blocks = _resnet_blocks(backbone, "backbone")
    else:
        raise MappingError(f"no Model Garden mapping for a {type(backbone).__name__} backbone")
    out = _garden_functional(convs, blocks, variable_names, "_backbone", source)
    if neck is not None:
        out.update(_garden_functional(_nasfpn_layers(neck), [], variable_names, "_decoder", source))

    cls_index, box_index = _head_permutations(head, aspect_ratios, tf_aspect_ratios, class_channels, tf_num_classes)
    for tower, module, short, predictor, index in (("cls_tower", head.cls_tower, "cls", "_classifier", cls_index),
                                                   ("box_tower", head.box_tower, "box", "_box_regressor", box_index)):
        at = f"head.{tower}"
        for i in range(len(module.convs)):
            out.update(conv_assignments(f"model/_head/_{short}_convs/{i}", f"{at}.convs.{i}", bias=True,
                                        suffix=_GARDEN_SUFFIX))
            for li in range(len(head.strides)):
                out.update(bn_assignments(f"model/_head/_{short}_norms/{li}/{i}", f"{at}.norms.{li}.{i}",
                                          suffix=_GARDEN_SUFFIX))
        out.update(conv_assignments(f"model/_head/{predictor}", f"{at}.predictor", bias=True,
                                    suffix=_GARDEN_SUFFIX, out_index=index))
    return out


def garden_ignored(names: Iterable[str]) -> list[str]:
    """Entries of a Model Garden checkpoint that are not model weights: the object graph, counters,
    optimizer state (slots and the optimizer object)."""
    return [n for n in names if not n.startswith("model/") or "/.OPTIMIZER_SLOT/" in n]
