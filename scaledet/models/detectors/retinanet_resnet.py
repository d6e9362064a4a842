"""Registered RetinaNets on ResNet backbones: torchvision's R50-FPN and R50 + NAS-FPN.

``retinanet_resnet50_fpn`` is torchvision's ``retinanet_resnet50_fpn`` (v1) rebuilt from our
parts with identical parameters, so its weights convert one to one
(:func:`scaledet.models.convert.convert_torchvision_retinanet`). The NAS-FPN models follow the
tensorflow/tpu layout (docs/reference/NASFPN.md §2) with the TPU RetinaNet head and losses
(docs/reference/SPINENET.md §1.14): the tensorflow/tpu / TF2 Model Garden form. The MindSpore
port's network, exactly, is ``retinanet_nasfpn_r50_port`` (``retinanet_port.py``). Each model is one table row; every field of its row can be
overridden through ``create_model``, and further keyword arguments go to ``build_retinanet``.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from scaledet.models.backbones.resnet import resnet
from scaledet.models.common import TPU_RETINANET_NORM, NormSettings
from scaledet.models.detectors.retinanet import RetinaNet, build_retinanet
from scaledet.models.necks.fpn import FPN
from scaledet.models.necks.nasfpn import NASFPN
from scaledet.models.recipes import apply_overrides
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


@dataclass(frozen=True)
class ResNetFPNRetinaNet:
    """Defaults of a torchvision-style RetinaNet on ResNet + FPN: torchvision's for fine-tuning
    from ImageNet (frozen BN, three trainable stages); ``frozen_bn=False, trainable_layers=5``
    is its from-scratch configuration. ``pretrained_backbone`` is an ImageNet ResNet state dict: a
    local file or a name such as ``torchvision:ResNet50_Weights.IMAGENET1K_V1`` (strict unless
    ``pretrained_strict`` is False).
    ``backbone_bn_eps=0.0`` reproduces torchvision with its COCO_V1 weights (it zeroes the
    frozen BN eps when loading them); ``scaledet convert torchvision-retinanet`` records that.

    ``image_size``: torchvision resizes the short side to 800 (long side <= 1333); our pipeline
    sets the long side, and 1024 gives COCO's typical 4:3 images about torchvision's scale."""

    depth: int
    _: KW_ONLY
    num_classes: int = 91
    image_size: int = 1024
    frozen_bn: bool = True
    trainable_layers: int = 3
    pretrained_backbone: str | None = None
    pretrained_strict: bool = True
    backbone_bn_eps: float = 1e-5
    fpn_extra_input: str = "p5"


RESNET_FPN_RETINANETS: dict[str, ResNetFPNRetinaNet] = {
    # torchvision's retinanet_resnet50_fpn (36.4 AP COCO val2017 with its weights); class index =
    # COCO category id, as torchvision
    "retinanet_resnet50_fpn": ResNetFPNRetinaNet(50),
    # the same with a ResNet-101 trunk (no torchvision weights exist for it)
    "retinanet_resnet101_fpn": ResNetFPNRetinaNet(101),
}


def build_resnet_fpn_retinanet(recipe: ResNetFPNRetinaNet, **retina_kwargs) -> RetinaNet:
    backbone = resnet(recipe.depth, frozen_bn=recipe.frozen_bn, norm=NormSettings(eps=recipe.backbone_bn_eps),
                      trainable_layers=recipe.trainable_layers, pretrained=recipe.pretrained_backbone,
                      pretrained_strict=recipe.pretrained_strict)
    neck = FPN(backbone.feature_info, 256, extra_levels=2, extra_input=recipe.fpn_extra_input)
    kwargs = {**TORCHVISION_RETINANET_ARGS, **retina_kwargs}
    if not any(k in retina_kwargs for k in _ANCHOR_ARGS + ("anchor_generator",)):
        kwargs["anchor_generator"] = torchvision_retinanet_anchors()
    return build_retinanet(backbone, neck, num_classes=recipe.num_classes, image_size=recipe.image_size, **kwargs)


def create_resnet_fpn_retinanet(name: str, **overrides) -> RetinaNet:
    recipe, retina_kwargs = apply_overrides(RESNET_FPN_RETINANETS[name], overrides)
    return build_resnet_fpn_retinanet(recipe, **retina_kwargs)


# image_size: torchvision resizes the short side to 800 (long side <= 1333), upscaling smaller
# images; our pipeline sets the long side, and 1024 gives COCO's typical 640 x 480 images about
# torchvision's scale (1024 x 768 against its 1067 x 800), at which its COCO weights keep their
# accuracy. A 640 x 640 image is therefore upscaled to 1024 x 1024 (torchvision: 800 x 800);
# predict(..., image_size=640) runs it at its own size. `scaledet info` prints this.
@register_model(forwards_to=(ResNetFPNRetinaNet, build_retinanet))
def retinanet_resnet50_fpn(**kwargs) -> RetinaNet:
    return create_resnet_fpn_retinanet("retinanet_resnet50_fpn", **kwargs)


@register_model(forwards_to=(ResNetFPNRetinaNet, build_retinanet))
def retinanet_resnet101_fpn(**kwargs) -> RetinaNet:
    return create_resnet_fpn_retinanet("retinanet_resnet101_fpn", **kwargs)


@dataclass(frozen=True)
class ResNetNASFPNRetinaNet:
    """Defaults of a RetinaNet on ResNet + NAS-FPN. The backbone trains its BN (TPU trains from
    scratch, mmdetection unfreezes BN) and keeps PyTorch's BN eps (``backbone_norm``) so
    torchvision ImageNet weights load unchanged; the neck and head use tensorflow/tpu's
    (``norm``: decay 0.997, eps 1e-4). ``head_width`` None is the neck's ``width``.
    ``backbone_padding="same"``, ``backbone_width_multiplier`` and ``cell_input_width=256`` build
    TF2 Model Garden's layout (docs/reference/TF_ARITHMETIC.md §1, §6); ``scaledet convert
    tf-retinanet`` records them in a converted checkpoint."""

    _: KW_ONLY
    num_classes: int = 91
    image_size: int
    depth: int = 50
    num_stacks: int = 7
    width: int
    attention: str = "max_coarse"
    extra_levels: str = "pool"
    norm: NormSettings = TPU_RETINANET_NORM
    frozen_bn: bool = False
    backbone_norm: NormSettings = NormSettings()
    backbone_padding: str = "symmetric"
    backbone_width_multiplier: float = 1.0
    cell_input_width: int | None = None
    trainable_layers: int = 5
    pretrained_backbone: str | None = None
    pretrained_strict: bool = True
    head_width: int | None = None
    head_convs: int = 4
    anchor_size: float = 4.0


NASFPN_RETINANETS: dict[str, ResNetNASFPNRetinaNet] = {
    # ResNet-50 + NAS-FPN 7@256 @640: 60.3M params / 140.6B multiply-adds (tpu model zoo)
    "retinanet_nasfpn_r50": ResNetNASFPNRetinaNet(image_size=640, width=256),
    # ResNet-50 + NAS-FPN 7@384 (head 384) @1280, the paper's 45.4 AP model (≈103.9M params)
    "retinanet_nasfpn_r50_384": ResNetNASFPNRetinaNet(image_size=1280, width=384),
}


def build_resnet_nasfpn_retinanet(recipe: ResNetNASFPNRetinaNet, **retina_kwargs) -> RetinaNet:
    backbone = resnet(recipe.depth, frozen_bn=recipe.frozen_bn, norm=recipe.backbone_norm,
                      trainable_layers=recipe.trainable_layers, pretrained=recipe.pretrained_backbone,
                      pretrained_strict=recipe.pretrained_strict, padding=recipe.backbone_padding,
                      width_multiplier=recipe.backbone_width_multiplier)
    neck = NASFPN(backbone.feature_info, recipe.width, recipe.num_stacks, attention=recipe.attention,
                  extra_levels=recipe.extra_levels, norm=recipe.norm, cell_input_width=recipe.cell_input_width)
    retina_kwargs.setdefault("head_norm_settings", recipe.norm)
    return build_retinanet(backbone, neck, num_classes=recipe.num_classes, image_size=recipe.image_size,
                           head_width=recipe.head_width or recipe.width, head_convs=recipe.head_convs,
                           anchor_size=recipe.anchor_size, **retina_kwargs)


def create_resnet_nasfpn_retinanet(name: str, **overrides) -> RetinaNet:
    recipe, retina_kwargs = apply_overrides(NASFPN_RETINANETS[name], overrides)
    return build_resnet_nasfpn_retinanet(recipe, **retina_kwargs)


@register_model(forwards_to=(ResNetNASFPNRetinaNet, build_retinanet))
def retinanet_nasfpn_r50(**kwargs) -> RetinaNet:
    return create_resnet_nasfpn_retinanet("retinanet_nasfpn_r50", **kwargs)


@register_model(forwards_to=(ResNetNASFPNRetinaNet, build_retinanet))
def retinanet_nasfpn_r50_384(**kwargs) -> RetinaNet:
    return create_resnet_nasfpn_retinanet("retinanet_nasfpn_r50_384", **kwargs)
