"""``retinanet_nasfpn_r50_port``: the MindSpore NAS-FPN port's RetinaNet, exactly.

The port (mindspore-ai/models ``research/cv/nas-fpn``; docs/reference/MINDSPORE_FORMATS.md §6)
differs from our ``retinanet_nasfpn_r50``, which is the tensorflow/tpu / Model Garden form:

- backbone ResNet-50 with TensorFlow 'SAME' padding, BN eps 1e-3 / decay 0.997, a 64-wide stem
  whatever the stage widths, the last BN of each bottleneck starting at gamma 0;
- NAS-FPN with average-pool attention, P6/P7 by 1x1 conv + BN + max pool, no conv biases,
  BN eps 1e-5 / decay 0.997;
- per-level (unshared) head towers without biases or norm, ``num_classes + 1`` sigmoid channels
  with background at channel 0 (a target on every negative anchor);
- every conv initialised TruncatedNormal(0.01);
- anchors 32..512 x 2^(s/3), ratios (0.5, 1, 2) ratio-major; SSD box coding (10, 10, 5, 5)
  without a size clamp;
- detections per class (score > 0.1, NMS IoU 0.6 with +1-pixel areas, 100 per class, no
  per-image cap);
- a square (stretched) 640 input in training and evaluation.

Parameter count at full size (81 channels): 85,891,392, the port's trainable count
(``full_size_params_eval.tsv``; tested). Against the published 60.3M of the model with one
shared head and 80 classes (docs/reference/NASFPN.md §2.5): unsharing the four 256-wide tower
convs over five levels adds 2 towers x 4 more levels x 4 convs x 589,824 = 18,874,368; unsharing
the predictors adds 4 x 2,304 x (720 + 36) = 6,967,296; the 81st channel adds 5 x 9 x 2,304 =
103,680.
85,891,392 - 25,945,344 = 59,946,048, which is 0.59% below 60.3M; it exceeds our own count of
that form (``retinanet_nasfpn_r50``, 80 classes) by the port's P6/P7 1x1 convs less the published
form's biases and head BN (tested; docs/CONVERT.md).
"""
from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

import torch
import torch.nn as nn

from scaledet.data.input_spec import InputSpec
from scaledet.models.backbones.resnet import resnet
from scaledet.models.common import NormSettings
from scaledet.models.detectors.retinanet import RetinaNet
from scaledet.models.heads.port_head import PortRetinaHead, truncated_normal_
from scaledet.models.heads.retina_head import flatten_level
from scaledet.models.necks.nasfpn import NASFPN
from scaledet.models.recipes import apply_overrides
from scaledet.ops.anchors import AnchorGenerator
from scaledet.ops.box_coder import BoxCoder
from scaledet.ops.matcher import IoUMatcher
from scaledet.ops.port_postprocess import PortPostProcessor
from scaledet.ops.retinanet_criterion import RetinaNetCriterion
from scaledet.registry import register_model

# The port's BatchNorms: decay 0.997 everywhere; eps 1e-3 in the ResNet, 1e-5 in the neck.
PORT_BACKBONE_NORM = NormSettings.from_tf(0.997, 1e-3)
PORT_NECK_NORM = NormSettings.from_tf(0.997, 1e-5)
PORT_ANCHOR_BASES = (32, 64, 128, 256, 512)


class PortRetinaNet(RetinaNet):
    """RetinaNet whose class maps carry a background channel 0 (``num_classes`` stays the count
    of real classes, labels ``0..C-1`` as every scaledet data set gives them)."""

    def flat_outputs(self, outputs: dict[str, list[torch.Tensor]]):
        """Per-level ``[B, N_l, C + 1]`` logits (background first), ``[B, N_l, 4]`` deltas, anchors."""
        cls = [flatten_level(x, self.num_classes + 1) for x in outputs["cls_logits"]]
        box = [flatten_level(x, 4) for x in outputs["box_deltas"]]
        sizes = [tuple(x.shape[-2:]) for x in outputs["cls_logits"]]
        return cls, box, self.anchor_generator(sizes, device=cls[0].device)

    def postprocess(self, outputs, image_sizes, *, original_sizes=None):
        """Detections of the real classes; with ``original_sizes`` (the files' ``(h, w)``) the NMS
        areas are +1 in original pixels as in the port, else +1 in network pixels."""
        cls, box, anchors = self.flat_outputs(outputs)
        first = outputs["cls_logits"][0]
        stride = self.anchor_generator.strides[0]
        sizes = self.image_sizes_tensor(
            image_sizes, first.new_empty(first.shape[0], 1, first.shape[2] * stride, first.shape[3] * stride))
        if original_sizes is not None:
            original_sizes = self.image_sizes_tensor(original_sizes, first)
        return self.postprocessor([c[..., 1:] for c in cls], box, anchors, sizes, original_sizes)


@dataclass(frozen=True)
class MindSporeNASFPNRetinaNet:
    """The port's network and detection settings; widths are arguments so that narrow instances
    (the test fixture: ``width_multiplier=0.125, width=32, num_stacks=2, head_width=16``) build too.
    ``width_multiplier`` scales the ResNet stages only; the stem stays ``stem_width`` wide."""

    _: KW_ONLY
    num_classes: int = 80
    image_size: int = 640
    depth: int = 50
    width_multiplier: float = 1.0
    stem_width: int = 64
    num_stacks: int = 7
    width: int = 256
    head_width: int = 256
    head_convs: int = 4
    backbone_norm: NormSettings = PORT_BACKBONE_NORM
    norm: NormSettings = PORT_NECK_NORM
    score_threshold: float = 0.1
    nms_iou: float = 0.6
    max_per_class: int = 100
    focal_alpha: float = 0.75
    focal_gamma: float = 2.0
    box_loss: str = "smooth_l1"
    box_loss_delta: float = 1.0
    box_loss_weight: float = 1.0


PORT_RETINANETS: dict[str, MindSporeNASFPNRetinaNet] = {
    # ResNet-50 + NAS-FPN 7@256 @640, 81 sigmoid channels: 41.7 AP on the port's val2017 subset
    "retinanet_nasfpn_r50_port": MindSporeNASFPNRetinaNet(),
}


def port_anchors(strides=(8, 16, 32, 64, 128)) -> AnchorGenerator:
    sizes = [[base * 2 ** (s / 3) for s in range(3)] for base in PORT_ANCHOR_BASES]
    return AnchorGenerator(strides, sizes, (0.5, 1.0, 2.0), scale_major=False)


def build_port_retinanet(recipe: MindSporeNASFPNRetinaNet) -> PortRetinaNet:
    backbone = resnet(recipe.depth, frozen_bn=False, norm=recipe.backbone_norm, trainable_layers=5,
                      padding="same", width_multiplier=recipe.width_multiplier, stem_width=recipe.stem_width,
                      zero_init_residual=True)
    neck = NASFPN(backbone.feature_info, recipe.width, recipe.num_stacks, attention="avg_fine",
                  extra_levels="conv_pool", norm=recipe.norm, conv_bias=False)
    for module in (*backbone.modules(), *neck.modules()):
        if isinstance(module, nn.Conv2d):
            truncated_normal_(module.weight, 0.01)
    anchors = port_anchors()
    head = PortRetinaHead(neck.feature_info, recipe.num_classes, anchors.num_anchors_per_location,
                          width=recipe.head_width, num_convs=recipe.head_convs)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0), size_clip=math.inf)  # SSD variances 0.1/0.2; no clamp
    criterion = RetinaNetCriterion(
        recipe.num_classes, coder, IoUMatcher(0.5, 0.5, "force_best_anchor"), focal_alpha=recipe.focal_alpha,
        focal_gamma=recipe.focal_gamma, box_loss=recipe.box_loss, box_loss_delta=recipe.box_loss_delta,
        box_loss_weight=recipe.box_loss_weight, normalize="batch", background_channel=True)
    post = PortPostProcessor(coder, recipe.num_classes, score_threshold=recipe.score_threshold,
                             nms_iou=recipe.nms_iou, per_class=recipe.max_per_class)
    spec = InputSpec(recipe.image_size, size_divisor=128, resize_mode="square")
    return PortRetinaNet(backbone, neck, head, anchors, criterion, post, num_classes=recipe.num_classes,
                         input_spec=spec)


def create_port_retinanet(name: str, **overrides) -> PortRetinaNet:
    recipe, rest = apply_overrides(PORT_RETINANETS[name], overrides)
    if rest:  # register_model has validated the names; this is a programming error
        raise TypeError(f"{name}: unexpected arguments {sorted(rest)}")
    return build_port_retinanet(recipe)


@register_model(forwards_to=(MindSporeNASFPNRetinaNet,))
def retinanet_nasfpn_r50_port(**kwargs) -> PortRetinaNet:
    return create_port_retinanet("retinanet_nasfpn_r50_port", **kwargs)
