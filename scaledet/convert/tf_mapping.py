"""A checked mapping from TensorFlow variable names to scaledet state-dict keys.

A mapping is built from the model's structure alone (see :mod:`scaledet.convert.retinanet_tf`);
:func:`check_mapping` then compares it with what a checkpoint actually holds and refuses, in one
error listing every problem, TF variables nothing maps, state-dict entries nothing fills, and
shape mismatches. :func:`convert_variables` applies it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Mapping, Sequence

import numpy as np
import torch

from scaledet.errors import CheckpointError

__all__ = ["Assignment", "MappingError", "bn_assignments", "check_mapping", "conv_assignments",
           "convert_variables", "load_mapped", "predictor_permutation"]

# TF -> PyTorch names of a BatchNormalization's four variables.
BN_VARIABLES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                "moving_variance": "running_var"}
# scaledet decodes box deltas as (dx, dy, dw, dh); both TF codes predict (dy, dx, dh, dw).
TF_BOX_ORDER_TO_OURS = (1, 0, 3, 2)
_MAX_LISTED = 12


class MappingError(CheckpointError, ValueError):
    """TF variables and a scaledet model that do not correspond one to one."""


@dataclass(frozen=True)
class Assignment:
    """Where one TF variable goes: the state-dict ``key`` and how to convert the array.

    ``kind`` "conv": an HWIO kernel becomes OIHW; "copy": the array is taken as is.
    ``out_index``: after that, output channel ``i`` is taken from TF channel ``out_index[i]`` (a
    permutation, or a selection when TF channels are dropped, e.g. the background class);
    ``in_index`` likewise for a conv kernel's input channels (e.g. a BGR-trained first conv fed RGB).
    """

    key: str
    kind: Literal["conv", "copy"] = "copy"
    out_index: tuple[int, ...] | None = None
    in_index: tuple[int, ...] | None = None

    def converted_shape(self, tf_shape: Sequence[int]) -> tuple[int, ...] | None:
        """The PyTorch shape this TF shape becomes, or None when the conversion does not apply."""
        shape = tuple(tf_shape)
        if self.kind == "conv":
            if len(shape) != 4:
                return None
            shape = (shape[3], shape[2], shape[0], shape[1])
        if self.out_index is not None:
            if not shape or max(self.out_index) >= shape[0] or len(set(self.out_index)) != len(self.out_index):
                return None
            shape = (len(self.out_index),) + shape[1:]
        if self.in_index is not None and (len(shape) < 2 or shape[1] != len(self.in_index)):
            return None
        return shape

    def convert(self, array: np.ndarray) -> torch.Tensor:
        if self.kind == "conv":
            array = array.transpose(3, 2, 0, 1)
        if self.out_index is not None:
            array = array[list(self.out_index)]
        if self.in_index is not None:
            array = array[:, list(self.in_index)]
        return torch.from_numpy(np.ascontiguousarray(array))


def conv_assignments(tf_prefix: str, key_prefix: str, *, bias: bool = False, suffix: str = "",
                     out_index: tuple[int, ...] | None = None) -> dict[str, Assignment]:
    """A conv layer: ``<tf_prefix>/kernel`` (and ``/bias``) -> ``<key_prefix>.weight`` (``.bias``)."""
    out = {f"{tf_prefix}/kernel{suffix}": Assignment(f"{key_prefix}.weight", "conv", out_index)}
    if bias:
        out[f"{tf_prefix}/bias{suffix}"] = Assignment(f"{key_prefix}.bias", "copy", out_index)
    return out


def bn_assignments(tf_prefix: str, key_prefix: str, *, suffix: str = "") -> dict[str, Assignment]:
    return {f"{tf_prefix}/{tf_name}{suffix}": Assignment(f"{key_prefix}.{torch_name}")
            for tf_name, torch_name in BN_VARIABLES.items()}


def predictor_permutation(num_scales: int, our_ratios: Sequence[float], tf_ratios: Sequence[float],
                          per_anchor: int, coordinate_order: Sequence[int] | None = None) -> tuple[int, ...] | None:
    """TF channel for each of our predictor channels (``None`` when it is the identity).

    Both sides put anchors scale-major (``a = scale * num_ratios + ratio``) and channels
    anchor-major (``a * per_anchor + k``, ``per_anchor`` counting the TF channels). Only the ratio
    order and ``coordinate_order`` (the TF channel ``k`` of each of ours: box coordinates, or the
    classes kept when TF's background channel is dropped) can differ.
    """
    if sorted(our_ratios) != sorted(tf_ratios):
        raise MappingError(f"aspect ratios differ: the model has {list(our_ratios)}, the checkpoint "
                           f"{list(tf_ratios)}")
    coords = list(coordinate_order) if coordinate_order is not None else list(range(per_anchor))
    index = []
    for scale in range(num_scales):
        for ratio in our_ratios:
            tf_anchor = scale * len(tf_ratios) + list(tf_ratios).index(ratio)
            index.extend(tf_anchor * per_anchor + k for k in coords)
    return None if index == list(range(len(index))) else tuple(index)


def _listing(title: str, items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"{len(items)} {title}: {shown}{more}"


def check_mapping(mapping: Mapping[str, Assignment], tf_shapes: Mapping[str, Sequence[int]],
                  state_shapes: Mapping[str, Sequence[int]], *, source: str,
                  ignored: Iterable[str] = ()) -> None:
    """Raise :class:`MappingError` unless the mapping pairs checkpoint and model one to one.

    ``ignored``: checkpoint entries that are not model weights (bookkeeping, optimizer state);
    ``num_batches_tracked`` buffers are never expected in a TF checkpoint.
    """
    ignored = set(ignored)
    problems = []
    unmapped = sorted(n for n in tf_shapes if n not in mapping and n not in ignored)
    absent = sorted(n for n in mapping if n not in tf_shapes)
    targets: dict[str, str] = {}
    twice = []
    for name, assignment in mapping.items():
        if assignment.key in targets:
            twice.append(f"{assignment.key} <- {targets[assignment.key]} and {name}")
        targets[assignment.key] = name
    unknown_keys = sorted(f"{n} -> {a.key}" for n, a in mapping.items() if a.key not in state_shapes)
    unfilled = sorted(k for k in state_shapes if k not in targets and not k.endswith("num_batches_tracked"))
    mismatched = sorted(
        f"{name} {list(tf_shapes[name])} -> {a.key} {list(state_shapes[a.key])}"
        for name, a in mapping.items()
        if name in tf_shapes and a.key in state_shapes
        and a.converted_shape(tf_shapes[name]) != tuple(state_shapes[a.key]))
    for title, items in (("checkpoint variables nothing maps", unmapped),
                         ("expected variables missing from the checkpoint", absent),
                         ("model entries nothing fills", unfilled),
                         ("mapped to keys the model lacks", unknown_keys),
                         ("model entries filled twice", twice),
                         ("shape mismatches", mismatched)):
        if items:
            problems.append(_listing(title, items))
    if problems:
        raise MappingError(f"{source}: does not match the model: " + "; ".join(problems))


def convert_variables(mapping: Mapping[str, Assignment],
                      read: Callable[[str], np.ndarray]) -> dict[str, torch.Tensor]:
    """State-dict entries from the TF variables (``read(name)`` gives one as numpy)."""
    return {a.key: a.convert(read(name)) for name, a in mapping.items()}


def load_mapped(model: torch.nn.Module, mapping: Mapping[str, Assignment], checkpoint, *,
                ignored: Iterable[str] = ()) -> None:
    """Check ``mapping`` against a :class:`~scaledet.convert.tf_checkpoint.TFCheckpoint` and the
    model, then load the converted weights; nothing is loaded unless everything matches."""
    tf_shapes = {name: info.shape for name, info in checkpoint.variables.items()}
    state_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    check_mapping(mapping, tf_shapes, state_shapes, source=str(checkpoint.prefix), ignored=ignored)
    # strict=False only for num_batches_tracked, which check_mapping already allowed for.
    model.load_state_dict(convert_variables(mapping, checkpoint.read), strict=False)
