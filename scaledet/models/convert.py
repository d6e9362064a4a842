"""Turn other libraries' checkpoints into scaledet checkpoints.

A scaledet checkpoint is a ``torch.save``d dict: ``model`` (state dict), ``model_name``,
``model_args`` (builder keyword arguments) and ``format`` (see :data:`CHECKPOINT_FORMAT`).
"""
from __future__ import annotations

import re

import torch

from scaledet.errors import DataError


CHECKPOINT_FORMAT = "scaledet-checkpoint-v1"
TORCHVISION_NUM_ANCHORS = 9

# torchvision retinanet_resnet50_fpn key -> ours. Conv2dNormActivation wraps each conv as ".0";
# torchvision checkpoints older than its v2 head layout put the convs at even Sequential indices.
_RULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"^backbone\.body\.(.+)$", r"backbone.\1"),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.(?:0\.)?(weight|bias)$", r"neck.lateral_convs.\1.\2"),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.(?:0\.)?(weight|bias)$", r"neck.output_convs.\1.\2"),
    (r"^backbone\.fpn\.extra_blocks\.p6\.(weight|bias)$", r"neck.extra_convs.0.\1"),
    (r"^backbone\.fpn\.extra_blocks\.p7\.(weight|bias)$", r"neck.extra_convs.1.\1"),
    (r"^head\.classification_head\.cls_logits\.(weight|bias)$", r"head.cls_tower.predictor.\1"),
    (r"^head\.regression_head\.bbox_reg\.(weight|bias)$", r"head.box_tower.predictor.\1"),
))
_HEAD_CONV = re.compile(r"^head\.(classification|regression)_head\.conv\.(\d+)\.(0\.)?(weight|bias)$")


def _rename(key: str) -> str | None:
    for pattern, replacement in _RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    match = _HEAD_CONV.match(key)
    if match:
        tower = "cls_tower" if match.group(1) == "classification" else "box_tower"
        index = int(match.group(2))
        # new layout conv.{i}.0.weight; old layout conv.{2i}.weight (conv, relu, conv, relu ...)
        index = index if match.group(3) else index // 2
        return f"head.{tower}.convs.{index}.{match.group(4)}"
    return None


def convert_torchvision_retinanet(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``retinanet_resnet50_fpn`` state dict to ``retinanet_resnet50_fpn``'s.

    Raises ``ValueError`` naming the first key that does not belong to that model.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = _rename(key)
        if new is None:
            raise DataError(f"key {key!r} is not part of torchvision's retinanet_resnet50_fpn")
        out[new] = value
    if "head.cls_tower.predictor.weight" not in out:
        raise DataError("no classification head (head.classification_head.cls_logits.weight) in the state dict")
    return out


def torchvision_retinanet_num_classes(state_dict: dict[str, torch.Tensor]) -> int:
    outputs = state_dict["head.classification_head.cls_logits.weight"].shape[0]
    if outputs % TORCHVISION_NUM_ANCHORS:
        raise DataError(f"classification head has {outputs} outputs, not a multiple of 9 anchors")
    return outputs // TORCHVISION_NUM_ANCHORS


def torchvision_retinanet_checkpoint(state_dict: dict[str, torch.Tensor], *, backbone_bn_eps: float | None = None,
                                     verify: bool = True) -> dict:
    """A scaledet checkpoint for ``retinanet_resnet50_fpn`` from torchvision's state dict.

    ``backbone_bn_eps=0.0`` is recorded for torchvision's published COCO_V1 weights, which
    torchvision itself runs with frozen-BN eps 0 (``None`` keeps the builder's 1e-5). With
    ``verify`` the converted weights are loaded (strictly) into a freshly built model first.
    """
    # torchvision keeps boxes that collapse when clipped: so does the converted model
    model_args: dict = {"num_classes": torchvision_retinanet_num_classes(state_dict), "drop_degenerate_boxes": False}
    if backbone_bn_eps is not None:
        model_args["backbone_bn_eps"] = float(backbone_bn_eps)
    converted = convert_torchvision_retinanet(state_dict)
    if verify:
        from scaledet.registry import create_model

        model = create_model("retinanet_resnet50_fpn", **model_args)
        model.load_state_dict(converted, strict=True)
    return {"model": converted, "model_name": "retinanet_resnet50_fpn", "model_args": model_args,
            "format": CHECKPOINT_FORMAT}
