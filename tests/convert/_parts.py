"""Narrow scaledet parts shaped like the TF fixtures, and how to compare them with TF outputs."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from scaledet.convert.retinanet_tf import (GARDEN_NASFPN_OPTIONS, GARDEN_NORM, GARDEN_RESNET_OPTIONS,
                                           GARDEN_SPINENET_OPTIONS, TPU_NORM, TPU_SPINENET_OPTIONS)
from scaledet.convert.tf_mapping import TF_BOX_ORDER_TO_OURS, predictor_permutation
from scaledet.models.backbones.resnet import resnet
from scaledet.models.backbones.spinenet import spinenet
from scaledet.models.heads.retina_head import RetinaHead
from scaledet.models.necks.nasfpn import NASFPN

GARDEN = Path(__file__).resolve().parents[1] / "fixtures" / "tf2_model_garden"
LEVELS = range(3, 8)


class Parts(nn.Module):
    """backbone -> optional neck -> head, with RetinaNet's attribute names (so state-dict keys match)."""

    def __init__(self, backbone: nn.Module, neck: nn.Module | None, head: RetinaHead):
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head

    @torch.no_grad()
    def run(self, nhwc: np.ndarray) -> dict[str, np.ndarray]:
        """Every level's features and raw head outputs, NHWC like the TF fixtures."""
        self.eval()
        features = self.backbone(torch.from_numpy(nhwc).permute(0, 3, 1, 2))
        out = {f"backbone_l{lvl}": f for lvl, f in zip(LEVELS, features)}
        if self.neck is not None:
            features = self.neck(features)
            out.update({f"decoder_l{lvl}": f for lvl, f in zip(LEVELS, features)})
        head = self.head(features)
        out.update({f"cls_l{lvl}": x for lvl, x in zip(LEVELS, head["cls_logits"])})
        out.update({f"box_l{lvl}": x for lvl, x in zip(LEVELS, head["box_deltas"])})
        return {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}


def tpu_spinenet_parts(**overrides) -> Parts:
    """spinenet_tpu_ref's architecture: 49S blocks at filter_size_scale 0.12, 32-wide endpoints and head."""
    options = {"endpoints_num_filters": 32, "filter_size_scale": 0.12, "activation": "swish", "norm": TPU_NORM,
               **TPU_SPINENET_OPTIONS, **overrides}
    backbone = spinenet("49S", **options)
    head = RetinaHead(backbone.feature_info, 91, 9, width=32, norm_settings=TPU_NORM, act="swish")
    return Parts(backbone, None, head)


def garden_spinenet_parts(**overrides) -> Parts:
    """tests/fixtures/tf2_model_garden/spinenet (see its README)."""
    options = {"endpoints_num_filters": 16, "filter_size_scale": 0.08, "activation": "swish", "norm": GARDEN_NORM,
               **GARDEN_SPINENET_OPTIONS, **overrides}
    backbone = spinenet("49S", **options)
    head = RetinaHead(backbone.feature_info, 11, 9, width=16, norm_settings=GARDEN_NORM, act="swish")
    return Parts(backbone, None, head)


def garden_nasfpn_parts() -> Parts:
    """tests/fixtures/tf2_model_garden/nasfpn: ResNet-50 x 1/16, NAS-FPN 1 stack @4, head 4 x 8."""
    backbone = resnet(50, frozen_bn=False, norm=GARDEN_NORM, width_multiplier=0.0625, **GARDEN_RESNET_OPTIONS)
    neck = NASFPN(backbone.feature_info, 4, 1, norm=GARDEN_NORM, **GARDEN_NASFPN_OPTIONS)
    head = RetinaHead(neck.feature_info, 11, 9, width=8, norm_settings=GARDEN_NORM, act="relu")
    return Parts(backbone, neck, head)


def tf_outputs_in_our_order(reference, num_classes: int, tf_ratios, our_ratios=(1.0, 2.0, 0.5)) -> dict:
    """The fixture's outputs with head channels reordered as scaledet's (anchor ratios, box coordinates)."""
    cls = predictor_permutation(3, our_ratios, tf_ratios, num_classes)
    box = predictor_permutation(3, our_ratios, tf_ratios, 4, TF_BOX_ORDER_TO_OURS)
    out = {}
    for key in reference.files:
        value = reference[key]
        index = cls if key.startswith("cls_") else box if key.startswith("box_") else None
        out[key] = value[..., list(index)] if index is not None else value
    return out


def max_abs_differences(ours: dict, theirs: dict) -> dict[str, float]:
    assert set(theirs) <= set(ours), f"outputs missing: {sorted(set(theirs) - set(ours))}"
    return {k: float(np.abs(ours[k] - theirs[k]).max()) for k in sorted(theirs)}


def read_listing(path: Path) -> list[list[str]]:
    """Rows (without the header) of a TSV variable listing, gzipped or not."""
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()
    return [line.split("\t") for line in text.splitlines()[1:]]


def parse_shape(text: str) -> tuple[int, ...]:
    """"7,7,3,64" (tpu and Model Garden listings) or "7x7x3x8" (BlitzNet's)."""
    return tuple(int(d) for d in text.replace("x", ",").split(",") if d)
