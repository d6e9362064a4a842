"""RetinaNet: backbone -> optional neck -> shared class/box head, with anchors, criterion and
post-processor passed in as objects."""
from __future__ import annotations

import torch
import torch.nn as nn

from scaledet.data.input_spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from scaledet.errors import UsageError
from scaledet.models.common import TPU_RETINANET_NORM, FeatureInfo, NormLike, norm_settings, pad_to_multiple
from scaledet.models.detectors.base import Detector
from scaledet.models.heads.retina_head import RetinaHead, flatten_level
from scaledet.ops.anchors import AnchorGenerator
from scaledet.ops.box_coder import BoxCoder
from scaledet.ops.matcher import IoUMatcher
from scaledet.ops.postprocess import SigmoidPostProcessor
from scaledet.ops.retinanet_criterion import RetinaNetCriterion


class RetinaNet(Detector):
    def __init__(self, backbone: nn.Module, neck: nn.Module | None, head: RetinaHead, anchors: AnchorGenerator,
                 criterion: RetinaNetCriterion, postprocessor: SigmoidPostProcessor, *, num_classes: int,
                 input_spec: InputSpec, class_names: list[str] | None = None):
        super().__init__(input_spec, num_classes=num_classes, criterion=criterion, postprocessor=postprocessor,
                         class_names=class_names)
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.anchor_generator = anchors
        features = (neck or backbone).feature_info
        if [f.stride for f in features] != list(anchors.strides):
            raise UsageError(f"anchor strides {anchors.strides} do not match feature strides "
                             f"{[f.stride for f in features]}")

    @property
    def feature_info(self) -> list[FeatureInfo]:
        return (self.neck or self.backbone).feature_info

    def num_anchors(self, height: int, width: int) -> int:
        """Anchors of one ``height x width`` input, after ``forward`` pads it to the divisor."""
        divisor = self.size_divisor
        return self.anchor_generator.num_anchors(-(-height // divisor) * divisor, -(-width // divisor) * divisor)

    def forward(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        images = pad_to_multiple(images, self.size_divisor)
        features = self.backbone(images)
        if self.neck is not None:
            features = self.neck(features)
        return self.head(features)

    def flat_outputs(self, outputs: dict[str, list[torch.Tensor]]):
        """Per-level ``[B, N_l, C]`` logits, ``[B, N_l, 4]`` deltas and ``[N_l, 4]`` anchors."""
        cls = [flatten_level(x, self.num_classes) for x in outputs["cls_logits"]]
        box = [flatten_level(x, 4) for x in outputs["box_deltas"]]
        sizes = [tuple(x.shape[-2:]) for x in outputs["cls_logits"]]
        anchors = self.anchor_generator(sizes, device=cls[0].device)
        return cls, box, anchors

    def loss(self, outputs, targets, image_sizes=None):
        cls, box, anchors = self.flat_outputs(outputs)
        return self.criterion(torch.cat(cls, 1), torch.cat(box, 1), torch.cat(anchors, 0), targets)

    def postprocess(self, outputs, image_sizes):
        cls, box, anchors = self.flat_outputs(outputs)
        if not isinstance(image_sizes, torch.Tensor):
            first = outputs["cls_logits"][0]
            stride = self.anchor_generator.strides[0]
            image_sizes = self.image_sizes_tensor(
                image_sizes, first.new_empty(first.shape[0], 1, first.shape[2] * stride, first.shape[3] * stride))
        return self.postprocessor(cls, box, anchors, image_sizes)


def build_retinanet(backbone: nn.Module, neck: nn.Module | None = None, *, num_classes: int, image_size: int,
                    head_width: int = 256, head_convs: int = 4, head_norm: str = "per_level_bn",
                    head_norm_settings: NormLike = TPU_RETINANET_NORM, head_act: str = "relu",
                    head_predictor_init_std: float = 1e-5, prior_prob: float = 0.01,
                    anchor_size: float = 4.0, num_scales: int = 3,
                    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5),
                    match_positive: float = 0.5, match_negative: float = 0.5,
                    match_low_quality: str | None = "force_best_anchor",
                    focal_alpha: float = 0.25, focal_gamma: float = 1.5, box_loss: str = "huber",
                    box_loss_delta: float = 0.1, box_loss_weight: float = 50.0, loss_normalize: str = "batch",
                    box_coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                    box_pixel_offset: float = 0.0,
                    score_threshold: float = 0.05, pre_nms_topk: int = 1000, nms_iou: float = 0.5,
                    max_detections: int = 100, drop_zero_boxes: bool = False,
                    drop_degenerate_boxes: bool = True, size_divisor: int = 128,
                    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN,
                    pixel_std: tuple[float, float, float] = IMAGENET_STD,
                    class_names: list[str] | None = None,
                    anchor_generator: AnchorGenerator | None = None) -> RetinaNet:
    """RetinaNet with the tensorflow/tpu defaults (docs/reference/SPINENET.md §1.14) unless told otherwise.

    ``box_pixel_offset=1`` codes boxes with the tpu code's legacy +1 pixel convention and
    ``drop_zero_boxes`` drops detections that clip to the all-zero box as its NMS does (converted
    tpu checkpoints record both; docs/reference/TF_ARITHMETIC.md §8)."""
    features = (neck or backbone).feature_info
    levels = [f.level for f in features]
    anchors = anchor_generator or AnchorGenerator.tpu(min(levels), max(levels), anchor_size, num_scales,
                                                      tuple(aspect_ratios))
    head = RetinaHead(features, num_classes, anchors.num_anchors_per_location, width=head_width, num_convs=head_convs,
                      norm=head_norm, norm_settings=norm_settings(head_norm_settings, TPU_RETINANET_NORM), act=head_act,
                      prior_prob=prior_prob, predictor_init_std=head_predictor_init_std)
    # (10, 10, 5, 5) = SSD variances 0.1/0.2
    coder = BoxCoder(tuple(box_coder_weights), pixel_offset=box_pixel_offset)
    criterion = RetinaNetCriterion(
        num_classes, coder, IoUMatcher(match_positive, match_negative, match_low_quality),
        focal_alpha=focal_alpha, focal_gamma=focal_gamma, box_loss=box_loss, box_loss_delta=box_loss_delta,
        box_loss_weight=box_loss_weight, normalize=loss_normalize)
    post = SigmoidPostProcessor(coder, score_threshold=score_threshold, pre_nms_topk=pre_nms_topk,
                                nms_iou=nms_iou, max_detections=max_detections, drop_zero_boxes=drop_zero_boxes,
                                drop_degenerate_boxes=drop_degenerate_boxes)
    spec = InputSpec(image_size, pixel_mean, pixel_std, size_divisor, resize_mode="long_side")
    return RetinaNet(backbone, neck, head, anchors, criterion, post, num_classes=num_classes, input_spec=spec,
                     class_names=class_names)
