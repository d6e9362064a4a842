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
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
    args = check_stored_settings(path, state["model_name"], dict(state.get("model_args") or {}), weights)
    model = create_model(state["model_name"], **args)
    model.load_state_dict(weights)
    if state.get("input_spec") is not None:
        model.input_spec = InputSpec.from_dict(state["input_spec"], source=str(path))
    model.class_names = state.get("class_names")
    model.label_to_category_id = state.get("label_to_category_id")
    return model.to(device).eval()


def check_stored_settings(path, name: str, args: dict, weights: dict) -> dict:
    """The model settings a checkpoint stores, checked before anything is allocated: their types
    and ranges, then the shapes of a model built on the ``meta`` device (no memory) against the
    stored weights. A small file naming huge widths must not make us allocate them."""
    from scaledet.config import MAX_IMAGE_SIZE, ConfigError, ModelConfig, check_model_arguments

    try:
        check_model_arguments(ModelConfig(name=name, args=args))
    except ConfigError as err:
        raise CheckpointError(f"{path}: stored model settings are not valid: {err}") from None
    size = args.get("image_size")
    if size is not None and not 0 < size <= MAX_IMAGE_SIZE:
        raise CheckpointError(f"{path}: stored image_size {size} is outside 1..{MAX_IMAGE_SIZE}")
    with torch.device("meta"):
        skeleton = create_model(name, **args)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    wrong = [f"{k} {stored[k]} vs {expected[k]}" for k in expected if k in stored and stored[k] != expected[k]]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: weights do not fit {name} with the stored settings {args}: "
                              f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})")
    return args
