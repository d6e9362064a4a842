"""MindSpore NAS-FPN port checkpoints -> ``retinanet_nasfpn_r50_port`` scaledet checkpoints.

Names (docs/reference/MINDSPORE_FORMATS.md §6, the fixture's parameter lists) are renamed by a
short rule table; the network's widths, depth, stack count and class count are read off the
tensor shapes, the model is built with them, and every one of its tensors must be filled by
exactly one checkpoint tensor of the same shape. Anything left on either side is an error that
lists it. Optimizer state of a training checkpoint (``moments.*``, ``learning_rate``, ...) is
recognised and dropped.

Two layout changes: BatchNorm ``gamma/beta/moving_mean/moving_variance`` become
``weight/bias/running_mean/running_var``, and each box predictor's output channels are permuted
from the port's (dy, dx, dh, dw) to scaledet's (dx, dy, dw, dh), so the converted model's raw
box outputs are the port's with columns [1, 0, 3, 2].
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch

from scaledet.convert.mindspore_checkpoint import MindSporeCheckpointError, read_mindspore_checkpoint
from scaledet.data.mindrecord_dataset import COCO_CATEGORY_IDS, PORT_COCO_CLASSES

__all__ = ["MODEL_NAME", "PORT_BOX_ORDER_TO_OURS", "network_params", "port_model_args", "port_state_dict",
           "convert_mindspore_nasfpn", "mindspore_nasfpn_checkpoint"]

MODEL_NAME = "retinanet_nasfpn_r50_port"
PORT_BOX_ORDER_TO_OURS = (1, 0, 3, 2)  # ours (dx, dy, dw, dh) from the port's (dy, dx, dh, dw)
# The port's stage holds nine merge cells (mmdetection's order); cells 4 and 6 are global-pool
# cells without a conv whose outputs only feed the sum cells 5 and 7. The seven cells with a conv
# are our NAS-FPN nodes 0..6 in order (the extra P5/P7 inputs of our nodes 4 and 5).
PORT_CELLS_WITH_CONV = (0, 1, 2, 3, 5, 7, 8)
_CELL_TO_NODE = {cell: node for node, cell in enumerate(PORT_CELLS_WITH_CONV)}
# Training checkpoints also hold the optimizer and loop state (full_size_params_train_ckpt.tsv).
_TRAINING_STATE = re.compile(r"^(moments\.|accum\.|learning_rate$|momentum$|global_step$|scale_sense$|"
                             r"current_iterator_step$|last_overflow_iterator_step$|epoch_num$|step_num$)")
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_RULES = (
    (re.compile(r"^backbone\.(.+)\.down_sample_layer\.(\d)\.(\w+)$"), r"backbone.\1.downsample.\2.\3"),
    (re.compile(r"^backbone\.(.+)$"), r"backbone.\1"),
    (re.compile(r"^neck\.lateral_convs\.(\d+)\.conv\.weight$"), r"neck.projections.\1.0.weight"),
    (re.compile(r"^neck\.lateral_convs\.(\d+)\.batchnorm\.(\w+)$"), r"neck.projections.\1.1.\2"),
    (re.compile(r"^neck\.extra_downsamples\.(\d+)\.0\.conv\.weight$"), r"neck.extra.\1.0.weight"),
    (re.compile(r"^neck\.extra_downsamples\.(\d+)\.0\.batchnorm\.(\w+)$"), r"neck.extra.\1.1.\2"),
    (re.compile(r"^head\.multi_cls_layers\.(\d+)\.feats\.(\d+)\.weight$"), r"head.cls_towers.\1.\2.weight"),
    (re.compile(r"^head\.multi_loc_layers\.(\d+)\.feats\.(\d+)\.weight$"), r"head.box_towers.\1.\2.weight"),
)
_STAGE = re.compile(r"^neck\.fpn_stages\.(\d+)\.(\d+)\.out_conv\.features\.([12])\.(\w+)$")
_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}


def _our_name(name: str) -> str | None:
    """The scaledet name of a port parameter (``network.`` stripped), or None if no rule fits."""
    stage = _STAGE.match(name)
    if stage:
        s, cell, part, leaf = stage.groups()
        if int(cell) not in _CELL_TO_NODE:
            return None
        renamed = f"neck.stacks.{s}.ops.{_CELL_TO_NODE[int(cell)]}.{part}.{leaf}"
    else:
        for pattern, replacement in _RULES:
            if pattern.match(name):
                renamed = pattern.sub(replacement, name)
                break
        else:
            return None
    head, _, leaf = renamed.rpartition(".")
    return f"{head}.{_BN.get(leaf, leaf)}"


def network_params(path: Path, params: dict) -> "OrderedDict[str, torch.Tensor]":
    """The network's tensors with ``network.`` stripped; training state dropped."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for name, value in params.items():
        if _TRAINING_STATE.match(name):
            continue
        short = name[len("network."):] if name.startswith("network.") else name
        if not isinstance(value, torch.Tensor):
            raise MindSporeCheckpointError(f"{path}: parameter {name!r} is not a tensor; not a MindSpore NAS-FPN "
                                           "port checkpoint")
        out[short] = value
    return out


def port_model_args(path: Path, params: dict[str, torch.Tensor]) -> dict:
    """``retinanet_nasfpn_r50_port`` arguments that reproduce the checkpoint's shapes."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in params:
            raise MindSporeCheckpointError(
                f"{path}: not a MindSpore NAS-FPN port checkpoint: no parameter {name!r} "
                f"({len(params)} network parameters, e.g. {', '.join(list(params)[:3])})")
        return tuple(params[name].shape)

    blocks = tuple(len({n.split(".")[2] for n in params if n.startswith(f"backbone.layer{i}.")}) for i in range(1, 5))
    if blocks not in _DEPTHS:
        raise MindSporeCheckpointError(f"{path}: not a MindSpore NAS-FPN port checkpoint: ResNet blocks per stage "
                                       f"{list(blocks)} match no depth (known: {sorted(_DEPTHS.values())})")
    stem = shape("backbone.conv1.weight")[0]
    bottleneck = shape("backbone.layer1.0.conv1.weight")[0]
    width = shape("neck.lateral_convs.0.conv.weight")[0]
    head_width = shape("head.multi_cls_layers.0.feats.0.weight")[0]
    head_convs = len({n for n in params if n.startswith("head.multi_cls_layers.0.feats.")}) - 1
    predictor = shape(f"head.multi_cls_layers.0.feats.{2 * head_convs}.weight")[0]
    if predictor % 9 or predictor // 9 < 2:
        raise MindSporeCheckpointError(f"{path}: class predictor has {predictor} outputs, not 9 anchors x "
                                       "(background + at least one class)")
    stacks = len({n.split(".")[2] for n in params if n.startswith("neck.fpn_stages.")})
    return {"num_classes": predictor // 9 - 1, "depth": _DEPTHS[blocks], "width_multiplier": bottleneck / 64,
            "stem_width": stem, "num_stacks": stacks, "width": width, "head_width": head_width,
            "head_convs": head_convs}


def port_state_dict(path: Path, params: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict filled from the port's tensors; every tensor on both sides accounted for."""
    ours = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state: dict[str, torch.Tensor] = {}
    unmapped, wrong = [], []
    for name, value in params.items():
        target = _our_name(name)
        if target is None or target not in ours or target in state:
            unmapped.append(name)
            continue
        if tuple(value.shape) != tuple(ours[target].shape):
            wrong.append(f"{name} {list(value.shape)} vs {target} {list(ours[target].shape)}")
            continue
        state[target] = value.to(ours[target].dtype).clone()
    missing = [k for k in ours if k not in state]
    if unmapped or wrong or missing:
        parts = []
        if unmapped:
            parts.append(f"{len(unmapped)} left over ({', '.join(unmapped[:6])}{', ...' if len(unmapped) > 6 else ''})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape ({'; '.join(wrong[:3])}{'; ...' if len(wrong) > 3 else ''})")
        if missing:
            parts.append(f"{len(missing)} scaledet tensors unfilled ({', '.join(missing[:6])}"
                         f"{', ...' if len(missing) > 6 else ''})")
        raise MindSporeCheckpointError(f"{path}: does not map onto {MODEL_NAME}: {'; '.join(parts)}")
    for name in [k for k in state if k.startswith("head.box_towers.") and k.endswith(f".{2 * _convs(model)}.weight")]:
        w = state[name]
        state[name] = w.view(-1, 4, *w.shape[1:])[:, list(PORT_BOX_ORDER_TO_OURS)].reshape(w.shape).contiguous()
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value.clone()
    return state


def _convs(model: torch.nn.Module) -> int:
    return (len(model.head.box_towers[0]) - 1) // 2


def convert_mindspore_nasfpn(path: str | Path, *, image_size: int = 640) -> tuple[dict, torch.nn.Module]:
    """``(checkpoint payload, loaded model)`` for a port ``.ckpt``; raises a one-line
    :class:`MindSporeCheckpointError` naming the file when anything does not map."""
    from scaledet.engine.checkpoint import FORMAT
    from scaledet.registry import create_model

    path = Path(path)
    params = network_params(path, read_mindspore_checkpoint(path))
    model_args = {**port_model_args(path, params), "image_size": image_size}
    try:
        model = create_model(MODEL_NAME, **model_args)
    except ValueError as err:  # widths that no ResNet/NAS-FPN of ours takes
        raise MindSporeCheckpointError(f"{path}: its shapes give no {MODEL_NAME} ({err})") from None
    model.load_state_dict(port_state_dict(path, params, model), strict=True)
    classes = model_args["num_classes"]
    names = list(PORT_COCO_CLASSES[1:classes + 1]) if classes <= 80 else None
    ids = list(COCO_CATEGORY_IDS[:classes]) if classes <= 80 else None
    model.class_names, model.label_to_category_id = names, ids
    payload = {"model": model.state_dict(), "model_name": MODEL_NAME, "model_args": model_args,
               "input_spec": model.input_spec.to_dict(), "class_names": names, "label_to_category_id": ids,
               "format": FORMAT, "source": f"MindSpore NAS-FPN port checkpoint {path.name}"}
    return payload, model


def mindspore_nasfpn_checkpoint(source: str | Path, output: str | Path, *, image_size: int = 640) -> dict:
    """Convert ``source`` and write ``output`` atomically (nothing is written if conversion fails)."""
    from scaledet.engine.checkpoint import save_atomic

    payload, _ = convert_mindspore_nasfpn(source, image_size=image_size)
    save_atomic(payload, output)
    return payload
