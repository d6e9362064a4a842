"""Registered RetinaNets on ResNet backbones: torchvision's R50-FPN and R50 + NAS-FPN.

``retinanet_resnet50_fpn`` is torchvision's ``retinanet_resnet50_fpn`` (v1) rebuilt from our
parts with identical parameters, so its weights convert one to one
(:func:`scaledet.models.convert.convert_torchvision_retinanet`). The NAS-FPN models follow the
tensorflow/tpu layout (docs/reference/NASFPN.md §2) with the TPU RetinaNet head and losses
(docs/reference/SPINENET.md §1.14).
Every builder forwards further keyword arguments to ``build_retinanet``.
"""
from __future__ import annotations

from scaledet.models.backbones.resnet import resnet
from scaledet.models.common import TPU_RETINANET_NORM, NormSettings
from scaledet.models.detectors.retinanet import RetinaNet, build_retinanet
from scaledet.models.necks.fpn import FPN
from scaledet.models.necks.nasfpn import NASFPN
from scaledet.ops.anchors import AnchorGenerator
from scaledet.registry import register_model

# torchvision RetinaNet v1 settings that differ from build_retinanet's tensorflow/tpu defaults.
TORCHVISION_RETINANET_ARGS: dict = dict(
    head_norm="none", head_predictor_init_std=0.01, match_positive=0.5, match_negative=0.4,
    match_low_quality="ties_keep_argmax", focal_alpha=0.25, focal_gamma=2.0, box_loss="l1",
    box_loss_weight=1.0, loss_normalize="per_image", score_threshold=0.05, pre_nms_topk=1000,
    nms_iou=0.5, max_detections=300,
)
_ANCHOR_ARGS = ("anchor_size", "num_scales", "aspect_ratios")


def torchvision_retinanet_anchors() -> AnchorGenerator:
    """torchvision ``retinanet_resnet50_fpn``'s anchors on P3..P7.

    Its sizes ``(x, int(x*2^(1/3)), int(x*2^(2/3)))`` are truncated to integers, so the octave
    scales differ slightly per level (32, 40, 50 but 64, 80, 101); ratio-major order, ratio = h/w,
    rounded half sizes, centres at ``k * stride``.
    """
    bases = (32, 64, 128, 256, 512)
    sizes = [(x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in bases]
    return AnchorGenerator((8, 16, 32, 64, 128), sizes, (0.5, 1.0, 2.0), center_offset=0.0, scale_major=False,
                           ratio_is_h_over_w=True, round_base=True)


def _norm(norm: NormSettings | dict | None, default: NormSettings) -> NormSettings:
    if norm is None:
        return default
    return NormSettings(**norm) if isinstance(norm, dict) else norm


def _resnet_fpn(depth: int, args: dict) -> RetinaNet:
    args = dict(args)
    retina_kwargs = args.pop("retina_kwargs")
    backbone = resnet(depth, frozen_bn=args.pop("frozen_bn"), norm=NormSettings(eps=args.pop("backbone_bn_eps")),
                      trainable_layers=args.pop("trainable_layers"), pretrained=args.pop("pretrained"))
    fpn_extra_input = args.pop("fpn_extra_input")
    num_classes, image_size = args.pop("num_classes"), args.pop("image_size")
    neck = FPN(backbone.feature_info, 256, extra_levels=2, extra_input=fpn_extra_input)
    kwargs = {**TORCHVISION_RETINANET_ARGS, **retina_kwargs}
    if not any(k in retina_kwargs for k in _ANCHOR_ARGS + ("anchor_generator",)):
        kwargs["anchor_generator"] = torchvision_retinanet_anchors()
    return build_retinanet(backbone, neck, num_classes=num_classes, image_size=image_size, **kwargs)


# image_size: torchvision resizes the short side to 800 (long side <= 1333); our pipeline sets the
# long side, and 1024 gives COCO's typical 4:3 images about torchvision's scale (1024 x 768).

@register_model(forwards_to=build_retinanet)
def retinanet_resnet50_fpn(*, num_classes: int = 91, image_size: int = 1024, frozen_bn: bool = True,
                           trainable_layers: int = 3, pretrained: str | None = None,
                           backbone_bn_eps: float = 1e-5, fpn_extra_input: str = "p5",
                           **retina_kwargs) -> RetinaNet:
    """torchvision's ``retinanet_resnet50_fpn`` (36.4 AP COCO val2017 with its weights).

    Defaults are torchvision's for fine-tuning from ImageNet (frozen BN, three trainable stages);
    ``frozen_bn=False, trainable_layers=5`` is its from-scratch configuration. ``pretrained`` is a
    local ImageNet ResNet-50 state dict. Class index = COCO category id, as torchvision.
    ``backbone_bn_eps=0.0`` reproduces torchvision with its COCO_V1 weights (it zeroes the frozen
    BN eps when loading them); ``scaledet convert torchvision-retinanet`` records that.
    """
    return _resnet_fpn(50, locals())


@register_model(forwards_to=build_retinanet)
def retinanet_resnet101_fpn(*, num_classes: int = 91, image_size: int = 1024, frozen_bn: bool = True,
                            trainable_layers: int = 3, pretrained: str | None = None,
                            backbone_bn_eps: float = 1e-5, fpn_extra_input: str = "p5",
                            **retina_kwargs) -> RetinaNet:
    """``retinanet_resnet50_fpn`` with a ResNet-101 trunk (no torchvision weights exist for it)."""
    return _resnet_fpn(101, locals())


def _resnet_nasfpn(args: dict) -> RetinaNet:
    args = dict(args)
    retina_kwargs = args.pop("retina_kwargs")
    norm = _norm(args.pop("norm"), TPU_RETINANET_NORM)
    backbone = resnet(args.pop("depth"), frozen_bn=args.pop("frozen_bn"),
                      norm=_norm(args.pop("backbone_norm"), NormSettings()),
                      trainable_layers=args.pop("trainable_layers"), pretrained=args.pop("pretrained"))
    width = args.pop("width")
    neck = NASFPN(backbone.feature_info, width, args.pop("num_stacks"), attention=args.pop("attention"),
                  extra_levels=args.pop("extra_levels"), norm=norm)
    retina_kwargs.setdefault("head_norm_settings", norm)
    head_width = args.pop("head_width") or width
    return build_retinanet(backbone, neck, head_width=head_width, **args, **retina_kwargs)


# NAS-FPN backbones train their BN (TPU trains from scratch, mmdetection unfreezes BN); the
# backbone keeps PyTorch's BN eps so torchvision ImageNet weights load unchanged, the neck and
# head use tensorflow/tpu's (decay 0.997, eps 1e-4).

@register_model(forwards_to=build_retinanet)
def retinanet_nasfpn_r50(*, num_classes: int = 91, image_size: int = 640, depth: int = 50, num_stacks: int = 7,
                         width: int = 256, attention: str = "max_coarse", extra_levels: str = "pool",
                         norm: NormSettings | dict | None = None, frozen_bn: bool = False,
                         backbone_norm: NormSettings | dict | None = None, trainable_layers: int = 5,
                         pretrained: str | None = None, head_width: int | None = None, head_convs: int = 4,
                         anchor_size: float = 4.0, **retina_kwargs) -> RetinaNet:
    """ResNet-50 + NAS-FPN 7@256 @640: 60.3M params / 140.6B multiply-adds (tpu model zoo)."""
    return _resnet_nasfpn(locals())


@register_model(forwards_to=build_retinanet)
def retinanet_nasfpn_r50_384(*, num_classes: int = 91, image_size: int = 1280, depth: int = 50,
                             num_stacks: int = 7, width: int = 384, attention: str = "max_coarse",
                             extra_levels: str = "pool", norm: NormSettings | dict | None = None,
                             frozen_bn: bool = False, backbone_norm: NormSettings | dict | None = None,
                             trainable_layers: int = 5, pretrained: str | None = None,
                             head_width: int | None = None, head_convs: int = 4, anchor_size: float = 4.0,
                             **retina_kwargs) -> RetinaNet:
    """ResNet-50 + NAS-FPN 7@384 (head 384) @1280, the paper's 45.4 AP model (≈103.9M params)."""
    return _resnet_nasfpn(locals())
