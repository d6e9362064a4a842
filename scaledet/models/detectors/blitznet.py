"""BlitzNet (Dvornik et al., ICCV 2017): joint SSD-style detection and semantic segmentation
from one ResNet + down-scale/ResSkip up-scale network (facts: docs/reference/BLITZNET.md).

The detector is assembled from parts passed in as objects: trunk, streams, detection head,
segmentation head, default boxes, criterion and post-processor.

Class conventions: ``num_classes`` counts foreground classes. Internally (``conf`` and ``seg``
channels) class 0 is background and dataset label ``l`` is channel ``l + 1``; the semantic
``mask`` targets and outputs use the same values (0 background, label + 1, 255 ignore), while
detection labels returned by ``postprocess`` are 0-based foreground labels like the data set's.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import torch
import torch.nn as nn

from scaledet.data.input_spec import InputSpec
from scaledet.errors import UsageError
from scaledet.models.backbones.blitz_resnet import BLITZ_NORM, CAFFE_INPUT, BlitzResNet, load_pretrained
from scaledet.models.common import FeatureInfo, NormLike, NormSettings, norm_settings
from scaledet.models.detectors.base import Detector
from scaledet.models.heads.seg_head import SegHead
from scaledet.models.heads.ssd_head import SSDHead
from scaledet.models.necks.blitz_streams import BlitzStreams
from scaledet.models.recipes import apply_overrides
from scaledet.ops.box_coder import BoxCoder
from scaledet.ops.default_boxes import DefaultBoxes
from scaledet.ops.matcher import IoUMatcher
from scaledet.ops.ssd_criterion import SSDCriterion
from scaledet.ops.ssd_postprocess import SSDPostProcessor
from scaledet.registry import register_model

# Reference: RGB [0,1] -> x255 -> BGR -> subtract mean, no std (docs/reference/BLITZNET.md §1.1). Expressed
# here on the [0,1] scale in RGB order (our loaders give RGB; TF weights get their first conv's input
# channels reversed when converted).
BLITZNET_MEAN, BLITZNET_STD = CAFFE_INPUT


TASKS = ("det", "seg")


class BlitzNet(Detector):
    """``det_head`` or ``seg_head`` may be None (a detection-only or segmentation-only model): the
    missing head is not built, its outputs and loss terms are absent, and ``postprocess`` returns
    no detections / no mask for it."""

    has_mask = True  # the segmentation head's label map comes out as ``mask`` (False without seg_head)

    def __init__(self, backbone: nn.Module, streams: BlitzStreams, det_head: SSDHead | None, seg_head: SegHead | None,
                 default_boxes: DefaultBoxes, criterion: SSDCriterion, postprocessor: SSDPostProcessor, *,
                 num_classes: int, input_spec: InputSpec, class_names: list[str] | None = None):
        super().__init__(input_spec, num_classes=num_classes, criterion=criterion, postprocessor=postprocessor,
                         class_names=class_names)
        if det_head is None and seg_head is None:
            raise UsageError("BlitzNet needs a detection or a segmentation head (tasks: det, seg)")
        self.backbone = backbone
        self.streams = streams
        self.det_head = det_head
        self.seg_head = seg_head
        self.has_mask = seg_head is not None
        self.default_boxes = default_boxes
        if len(streams.feature_info) != len(default_boxes.scales) - 1:
            raise UsageError(f"{len(streams.feature_info)} source maps but default boxes for "
                             f"{len(default_boxes.scales) - 1}")

    @property
    def feature_info(self) -> list[FeatureInfo]:
        return self.streams.feature_info

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t, head in zip(TASKS, (self.det_head, self.seg_head)) if head is not None)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        sources = self.streams(self.backbone(images))
        outputs = {}
        if self.det_head is not None:
            outputs["loc"], outputs["conf"] = self.det_head(sources)
        if self.seg_head is not None:
            outputs["seg"] = self.seg_head(sources)
        return outputs

    def input_size(self, image_sizes) -> tuple[int, int]:
        """The padded network input (h, w): the largest image (size_divisor is 1)."""
        if image_sizes is None:
            return self.default_image_size, self.default_image_size
        sizes = torch.as_tensor(image_sizes) if not isinstance(image_sizes, torch.Tensor) else image_sizes
        sizes = sizes.reshape(-1, 2)
        return int(sizes[:, 0].max()), int(sizes[:, 1].max())

    def num_anchors(self, height: int, width: int) -> int:
        """How many default boxes an ``height x width`` input gets (45,390 for BlitzNet300 x4)."""
        return int(self.anchors((height, width)).shape[0])

    def anchors(self, input_hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """Normalised default boxes ``[N, 4]`` for a network input of ``input_hw``."""
        return self.default_boxes(self.streams.source_sizes(*input_hw), device=device)

    def loss(self, outputs: dict[str, torch.Tensor], targets: list[dict], image_sizes=None) -> dict[str, torch.Tensor]:
        input_hw = self.input_size(image_sizes)
        anchors = self.anchors(input_hw, next(iter(outputs.values())).device)
        return self.criterion(outputs.get("loc"), outputs.get("conf"), outputs.get("seg"), anchors, targets, input_hw)

    def postprocess(self, outputs: dict[str, torch.Tensor], image_sizes=None) -> dict[str, torch.Tensor]:
        input_hw = self.input_size(image_sizes)
        conf = outputs.get("conf")
        if conf is None:  # segmentation only: no detections
            seg = outputs["seg"]
            sizes = None if image_sizes is None else self.image_sizes_tensor(image_sizes, seg).reshape(-1, 2)
            return self.postprocessor(None, None, None, input_hw, sizes, seg, batch_size=seg.shape[0])
        anchors = self.anchors(input_hw, conf.device)
        if anchors.shape[0] != conf.shape[1]:
            raise UsageError(f"{conf.shape[1]} box predictions but {anchors.shape[0]} default boxes for input "
                             f"size {input_hw}; pass the image_sizes the model was run on")
        sizes = None if image_sizes is None else self.image_sizes_tensor(image_sizes, conf).reshape(-1, 2)
        return self.postprocessor(outputs["loc"], conf, anchors, input_hw, sizes, outputs.get("seg"))


def build_blitznet(backbone: nn.Module, *, num_classes: int, image_size: int, x4: bool,
                   num_down_blocks: int | None = None, top_fm: int = 512, down_channels: int = 2048,
                   down_bottleneck: int = 512, seg_channels: int = 64, seg_kernel: int = 1,
                   anchor_scales: tuple[float, float, float] | None = None,
                   aspect_ratios: tuple[float, ...] = (2.0, 3.0), match_iou: float = 0.5,
                   neg_pos_ratio: float = 3.0, seg_weight: float = 1.0, score_threshold: float = 0.01,
                   pre_nms_topk: int = 400, nms_iou: float = 0.45, max_per_class: int | None = 50,
                   max_detections: int = 200, norm: NormLike = None, upsample: str = "bilinear",
                   tasks: tuple[str, ...] = TASKS,
                   pixel_mean: tuple[float, float, float] = BLITZNET_MEAN,
                   pixel_std: tuple[float, float, float] = BLITZNET_STD,
                   class_names: list[str] | None = None) -> BlitzNet:
    """BlitzNet with the reference defaults (docs/reference/BLITZNET.md §1-2) unless told otherwise.

    ``num_down_blocks`` None: 4 for inputs >= 512 (block5-8), else 3 (block5-7).
    ``anchor_scales`` None: the reference (smallest, min, max) for the number of source maps.
    ``upsample``: the up-stream resize, "bilinear" (PyTorch) or "tf_legacy" (the authors' TF1
    arithmetic; converted TF checkpoints record it).
    ``tasks``: ("det", "seg"), ("det",) or ("seg",): the head of a task not listed is not built,
    so nothing of it is trained, evaluated or left without a gradient under DDP."""
    tasks = tuple(tasks)
    if not tasks or len(set(tasks)) != len(tasks) or not set(tasks) <= set(TASKS):
        raise UsageError(f"tasks must be a non-empty list of {', '.join(TASKS)} without repeats, got {list(tasks)}")
    norm = norm_settings(norm, BLITZ_NORM)
    if num_down_blocks is None:
        num_down_blocks = 4 if image_size >= 512 else 3
    streams = BlitzStreams(backbone.feature_info, num_down_blocks=num_down_blocks, x4=x4, top_fm=top_fm,
                           down_channels=down_channels, down_bottleneck=down_bottleneck, norm=norm,
                           upsample=upsample)
    sources = streams.feature_info
    boxes = DefaultBoxes.blitznet(len(sources), anchor_scales, aspect_ratios)
    det_head = SSDHead(sources, num_classes + 1, boxes.boxes_per_location) if "det" in tasks else None
    seg_head = (SegHead(sources, num_classes + 1, base_channels=seg_channels, first_kernel=seg_kernel)
                if "seg" in tasks else None)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))  # SSD variances 0.1 / 0.2
    criterion = SSDCriterion(num_classes, coder, IoUMatcher(match_iou, match_iou, "force_best_anchor"),
                             neg_pos_ratio=neg_pos_ratio, seg_weight=seg_weight)
    post = SSDPostProcessor(coder, score_threshold=score_threshold, pre_nms_topk=pre_nms_topk, nms_iou=nms_iou,
                            max_per_class=max_per_class, max_detections=max_detections)
    # SSD-style: the whole image is resized to S x S, and S is the network input (divisor 1)
    spec = InputSpec(image_size, pixel_mean, pixel_std, size_divisor=1, resize_mode="square")
    return BlitzNet(backbone, streams, det_head, seg_head, boxes, criterion, post, num_classes=num_classes,
                    input_spec=spec, class_names=class_names)


@dataclass(frozen=True)
class BlitzNetR50:
    """Defaults of a BlitzNet on the reference ResNet-50 trunk; ``pretrained_backbone`` is ImageNet
    weights: a TF-slim resnet_v1_50 checkpoint (loaded by name, caffe-style inputs), or a torchvision
    ResNet-50 state dict, a local file or a name such as ``torchvision:ResNet50_Weights.IMAGENET1K_V1``
    (strict unless ``pretrained_strict`` is False; torchvision's normalisation). The input spec
    follows the weights loaded. ``norm`` takes a mapping too. ``width_divisor`` divides every channel
    width (trunk, streams, segmentation branch), as the converter's narrow TF fixture is built; 1 is
    the published model."""

    _: KW_ONLY
    num_classes: int = 20
    x4: bool
    image_size: int
    pretrained_backbone: str | None = None
    pretrained_strict: bool = True
    norm: NormSettings = BLITZ_NORM
    width_divisor: int = 1


BLITZNET_R50S: dict[str, BlitzNetR50] = {
    # BlitzNet300 (x4): 45,390 default boxes; 78.5 VOC07 mAP published (07+12)
    "blitznet300_r50": BlitzNetR50(x4=True, image_size=300),
    # BlitzNet512 (no x4): 32,766 default boxes; 80.7 VOC07 mAP published (07+12)
    "blitznet512_r50": BlitzNetR50(x4=False, image_size=512),
}


def create_blitznet_r50(name: str, **overrides) -> BlitzNet:
    recipe, kwargs = apply_overrides(BLITZNET_R50S[name], overrides)
    div = recipe.width_divisor
    if isinstance(div, bool) or not isinstance(div, int) or div < 1 or 64 % div:
        raise UsageError(f"width_divisor must be a positive divisor of 64, got {div!r}")
    for option, full in (("top_fm", 512), ("down_channels", 2048), ("down_bottleneck", 512), ("seg_channels", 64)):
        kwargs.setdefault(option, full // div)
    trunk = BlitzResNet((3, 4, 6, 3), tuple(w // div for w in (64, 128, 256, 512)), stem_channels=64 // div,
                        norm=recipe.norm)
    if recipe.pretrained_backbone is not None:
        mean, std = load_pretrained(trunk, recipe.pretrained_backbone, strict=recipe.pretrained_strict)
        # the inputs the loaded weights were trained on, unless the caller says otherwise
        kwargs.setdefault("pixel_mean", mean)
        kwargs.setdefault("pixel_std", std)
    return build_blitznet(trunk, num_classes=recipe.num_classes, x4=recipe.x4, image_size=recipe.image_size,
                          norm=recipe.norm, **kwargs)


@register_model(forwards_to=(BlitzNetR50, build_blitznet))
def blitznet300_r50(**kwargs) -> BlitzNet:
    return create_blitznet_r50("blitznet300_r50", **kwargs)


@register_model(forwards_to=(BlitzNetR50, build_blitznet))
def blitznet512_r50(**kwargs) -> BlitzNet:
    return create_blitznet_r50("blitznet512_r50", **kwargs)


@register_model(forwards_to=build_blitznet)
def blitznet_tiny(*, num_classes: int = 20, x4: bool = True, image_size: int = 128,
                  norm: NormLike = None, top_fm: int = 64, down_channels: int = 128,
                  down_bottleneck: int = 32, seg_channels: int = 16, **kwargs) -> BlitzNet:
    """BlitzNet wiring with one narrow unit per trunk stage: a CPU-sized model for tests/demos."""
    trunk = BlitzResNet((1, 1, 1, 1), (8, 16, 24, 32), stem_channels=16, norm=norm_settings(norm, BLITZ_NORM))
    return build_blitznet(trunk, num_classes=num_classes, x4=x4, image_size=image_size, norm=norm, top_fm=top_fm,
                          down_channels=down_channels, down_bottleneck=down_bottleneck,
                          seg_channels=seg_channels, **kwargs)
