"""Models back from checkpoints, for prediction, evaluation and export.

The prediction helpers themselves (decoding, batching, unpacking detections) live in the leaf
module :mod:`scaledet.data.prediction`; ``unpack_detections`` is re-exported here for callers
that imported it from this module.
"""
from __future__ import annotations

import torch

from scaledet.data.input_spec import InputSpec
from scaledet.data.prediction import unpack_detections
from scaledet.engine.checkpoint import CheckpointError, load_checkpoint
from scaledet.models.detectors.base import Detector
from scaledet.registry import create_model

__all__ = ["model_from_checkpoint", "unpack_detections"]


def model_from_checkpoint(path, device: torch.device | str = "cpu", *, use_ema: bool = True) -> Detector:
    """Rebuild a model from a scaledet checkpoint alone (name + builder args are stored in it).

    The class names, label map and input spec stored with it are set on the model: the weights
    were trained on inputs made by that spec (older checkpoints have none; the rebuilt model's
    own is theirs)."""
    state = load_checkpoint(path)
    if "model_name" not in state:
        raise CheckpointError(f"{path}: checkpoint lacks 'model_name'; was it written by scaledet?")
    model = create_model(state["model_name"], **dict(state.get("model_args") or {}))
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {state['model_name']}: "
                              f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:2]})")
    if state.get("input_spec") is not None:
        model.input_spec = InputSpec.from_dict(state["input_spec"], source=str(path))
    model.class_names = state.get("class_names")
    model.label_to_category_id = state.get("label_to_category_id")
    return model.to(device).eval()
