"""Fold BatchNorm into the convolution that feeds it, for inference copies of a model.

Which convolution feeds which BatchNorm is found by running the model once with forward hooks
(no graph tracing needed, so every family works as written). A pair is folded only when, on
every call, the convolution's output went straight into that one BatchNorm and nothing else fed
it. The arithmetic is ``torch.nn.utils.fusion.fuse_conv_bn_eval``.

RetinaNet heads share their tower convolutions across pyramid levels but keep BatchNorm
statistics per level (tensorflow/tpu ``RetinanetHead``): one shared convolution cannot absorb
five different BatchNorms, so those towers are un-shared into one fused convolution per level
(same arithmetic, no BatchNorm pass; the weights grow by the number of levels, the compute does
not).
"""
from __future__ import annotations

import copy
import itertools
import math
import weakref
from collections import defaultdict

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops import FrozenBatchNorm2d

from scaledet.errors import UsageError
from scaledet.models.detectors.base import Detector
from scaledet.models.heads.retina_head import SharedTower
from scaledet.utils.modules import replace_modules

_BATCH_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


class PerLevelFusedTower(nn.Module):
    """Inference stand-in for a RetinaNet tower with per-level BatchNorm: one conv per level and
    layer with that level's BatchNorm folded in, then the shared predictor."""

    def __init__(self, tower: SharedTower):
        super().__init__()
        self.levels = nn.ModuleList(
            nn.ModuleList(fuse_conv_bn_eval(conv, norms[i]) for i, conv in enumerate(tower.convs))
            for norms in tower.norms
        )
        self.act = tower.act
        self.predictor = tower.predictor

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        for conv in self.levels[level]:
            x = self.act(conv(x))
        return self.predictor(x)


def _unshare_per_level_towers(model: nn.Module) -> int:
    def unshare(child: nn.Module) -> nn.Module | None:
        if isinstance(child, SharedTower) and child.norms is not None and len(child.norms) > 1 \
                and all(isinstance(n, _BATCH_NORMS) for level in child.norms for n in level):
            return PerLevelFusedTower(child)
        return None

    return replace_modules(model, unshare)


def _example_input(model: nn.Module) -> torch.Tensor:
    if not isinstance(model, Detector):
        raise UsageError(f"fuse_conv_bn needs an example_input for a {type(model).__name__} (not a Detector)")
    divisor = model.input_spec.size_divisor
    size = math.ceil(128 / divisor) * divisor
    param = next(model.parameters(), None)
    if param is None:
        return torch.zeros(1, 3, size, size)
    return torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype)


def conv_bn_pairs(model: nn.Module, example_input: torch.Tensor) -> list[tuple[nn.Conv2d, nn.Module]]:
    """(conv, bn) pairs where the conv's output is, on every call, the bn's input."""
    conv_calls: dict[nn.Module, int] = defaultdict(int)
    bn_calls: dict[nn.Module, int] = defaultdict(int)
    fed: dict[tuple[nn.Module, nn.Module], int] = defaultdict(int)
    last_output: dict[int, tuple[nn.Module, torch.Tensor]] = {}

    def after_conv(module, _inputs, output):
        conv_calls[module] += 1
        last_output[id(output)] = (module, output)  # holding the tensor keeps its id unique

    def before_bn(module, inputs):
        bn_calls[module] += 1
        source = last_output.get(id(inputs[0]))
        if source is not None and source[1] is inputs[0]:
            fed[(source[0], module)] += 1

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(after_conv))
        elif isinstance(module, _BATCH_NORMS):
            handles.append(module.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    partners_of_conv: dict[nn.Module, set] = defaultdict(set)
    partners_of_bn: dict[nn.Module, set] = defaultdict(set)
    for conv, bn in fed:
        partners_of_conv[conv].add(bn)
        partners_of_bn[bn].add(conv)
    return [(conv, bn) for (conv, bn), count in fed.items()
            if len(partners_of_conv[conv]) == 1 and len(partners_of_bn[bn]) == 1
            and count == conv_calls[conv] == bn_calls[bn]]


def fuse_conv_bn(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded into convolutions; ``model`` is untouched.

    ``example_input`` is the batch used to discover the conv -> BatchNorm wiring (default, for a
    Detector: one zero image of about 128 px, a multiple of its input spec's ``size_divisor``).
    """
    fused = copy.deepcopy(model).eval()
    fused.fused_towers = _unshare_per_level_towers(fused)
    pairs = conv_bn_pairs(fused, example_input if example_input is not None else _example_input(fused))
    replacement: dict[nn.Module, nn.Module] = {}
    for conv, bn in pairs:
        replacement[conv] = fuse_conv_bn_eval(conv, bn)
        replacement[bn] = nn.Identity()
    replace_modules(fused, replacement.get)
    fused.fused_conv_bn_pairs = len(pairs)
    return fused


def count_batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, _BATCH_NORMS) for m in model.modules())


# ------------------------------------------------------------------ the copy behind Detector.predict

# model -> {setting: (fingerprint of its weights and module tree, its inference copy)}. Weak keys: the copy
# goes when the model does; kept outside the module so state_dict, deepcopy and pickling never
# see it.
_INFERENCE_COPIES: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[tuple, nn.Module]]]" = (
    weakref.WeakKeyDictionary())


def weights_fingerprint(model: nn.Module) -> tuple | None:
    """What changes whenever a parameter or buffer does: object, storage, device, dtype and the
    version counter that every in-place write bumps (optimizer steps, ``load_state_dict``,
    ``init`` functions, ``.to()``), plus the module tree. ``None`` when a tensor keeps no version
    counter (made under ``torch.inference_mode``), so no copy can be trusted to be current.

    Writes through ``tensor.data`` bypass the version counter and are not seen."""
    items: list = [tuple((name, type(m)) for name, m in model.named_modules())]
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_inference():
            return None
        items.append((id(t), t.data_ptr(), t._version, t.device, t.dtype, tuple(t.shape)))
    return tuple(items)


def cached_inference_copy(model: nn.Module, *, channels_last: bool, fuse_bn: bool = True,
                          precision: str = "fp32") -> nn.Module:
    """``model.optimized_for_inference(...)``, made on first use and reused while
    :func:`weights_fingerprint` is unchanged (one copy per setting, so fp32 and bf16 calls can
    alternate). A model whose weights cannot be fingerprinted (inference tensors) is returned as
    it is in fp32, and copied afresh on every call otherwise."""
    setting, fingerprint = (channels_last, fuse_bn, precision), weights_fingerprint(model)
    if fingerprint is None and precision == "fp32":
        return model
    copies = _INFERENCE_COPIES.setdefault(model, {}) if fingerprint is not None else {}
    cached = copies.get(setting)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, usable outside predict
        copy_ = model.optimized_for_inference(channels_last=channels_last, fuse_bn=fuse_bn, precision=precision)
    copies[setting] = (fingerprint, copy_)
    return copy_
