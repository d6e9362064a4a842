"""Registered RetinaNet + SpineNet models (docs/reference/SPINENET.md §1.10, §1.14-1.16), one table
row each.

Defaults follow the tensorflow/tpu yaml recipes ("protocol C": swish, stochastic depth 0.2,
0.16 for SpineNet-143), the published head widths and anchor sizes, and 91 COCO classes so the
parameter and FLOP counts match the paper. Every field of :class:`SpineNetRetinaNet` can be
overridden through ``create_model``; further keyword arguments go to ``build_retinanet`` (loss,
matching, post-processing, pixel statistics, ...).

``conv_padding``, ``pool_padding`` and ``downsample_pools`` choose PyTorch's or a TensorFlow code's
arithmetic (docs/reference/TF_ARITHMETIC.md §1-2); ``scaledet convert tf-retinanet`` records the
values of the checkpoint's code in the converted checkpoint.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from scaledet.models.backbones.spinenet import spinenet
from scaledet.models.common import TPU_RETINANET_NORM, NormSettings
from scaledet.models.detectors.retinanet import RetinaNet, build_retinanet
from scaledet.models.recipes import apply_overrides
from scaledet.registry import register_model

SHORT_RUN_NORM = NormSettings(momentum=0.1, eps=1e-3)


@dataclass(frozen=True)
class SpineNetRetinaNet:
    """The defaults of one registered RetinaNet-SpineNet. ``filter_size_scale``,
    ``resample_alpha`` and ``block_repeats`` = None keep the SpineNet variant's published value;
    ``head_act`` None is ``activation``; ``norm`` (backbone and head BN) takes a mapping too."""

    spinenet: str  # variant of backbones.spinenet.SCALING
    _: KW_ONLY
    num_classes: int = 91
    image_size: int
    activation: str = "swish"
    drop_connect_rate: float = 0.2
    endpoints_num_filters: int = 256
    filter_size_scale: float | None = None
    resample_alpha: float | None = None
    block_repeats: int | None = None
    endpoint_activation: bool = True
    norm: NormSettings = TPU_RETINANET_NORM
    conv_padding: str = "symmetric"
    pool_padding: str = "symmetric"
    downsample_pools: str = "one"
    head_width: int = 256
    head_convs: int = 4
    head_act: str | None = None
    anchor_size: float = 3.0


SPINENET_RETINANETS: dict[str, SpineNetRetinaNet] = {
    # 12.0M params / 33.8B multiply-adds @640 published (41.5 AP test-dev). endpoints_num_filters=256
    # reproduces them; the tpu code's 128 gives 11.3M / 30.8B.
    "retinanet_spinenet49s": SpineNetRetinaNet("49S", image_size=640, head_width=128),
    # 28.5M / 85.4B @640 (44.3 AP test-dev)
    "retinanet_spinenet49": SpineNetRetinaNet("49", image_size=640),
    # 43.0M / 265.4B @1024 (48.6 AP test-dev)
    "retinanet_spinenet96": SpineNetRetinaNet("96", image_size=1024),
    # 66.9M / 524.4B @1280 (50.7 AP test-dev)
    "retinanet_spinenet143": SpineNetRetinaNet("143", image_size=1280, drop_connect_rate=0.16, anchor_size=4.0),
    # 163.6M / 1885B @1280 (52.1 AP test-dev)
    "retinanet_spinenet190": SpineNetRetinaNet("190", image_size=1280, endpoints_num_filters=512, head_width=512,
                                               head_convs=7, anchor_size=4.0),
    # SpineNet-49 wiring at quarter width with a 2x64 head: a CPU-sized model for demos/tests. BN
    # running statistics use PyTorch's momentum 0.1: the TPU's 0.997 decay needs thousands of
    # steps to settle, longer than the short runs this model is for.
    "retinanet_spinenet49_tiny": SpineNetRetinaNet(
        "49", image_size=256, activation="relu", drop_connect_rate=0.0, endpoints_num_filters=64,
        filter_size_scale=0.25, head_width=64, head_convs=2, norm=SHORT_RUN_NORM),
}


def build_retinanet_spinenet(recipe: SpineNetRetinaNet, **retina_kwargs) -> RetinaNet:
    """The SpineNet backbone of ``recipe`` under a RetinaNet head; ``retina_kwargs`` go to
    :func:`build_retinanet`."""
    backbone = spinenet(
        recipe.spinenet, endpoints_num_filters=recipe.endpoints_num_filters,
        filter_size_scale=recipe.filter_size_scale, resample_alpha=recipe.resample_alpha,
        block_repeats=recipe.block_repeats, activation=recipe.activation,
        drop_connect_rate=recipe.drop_connect_rate, endpoint_activation=recipe.endpoint_activation,
        norm=recipe.norm, conv_padding=recipe.conv_padding, pool_padding=recipe.pool_padding,
        downsample_pools=recipe.downsample_pools)
    # The tpu head uses the same activation and BN settings as the backbone unless told otherwise.
    retina_kwargs.setdefault("head_norm_settings", recipe.norm)
    return build_retinanet(backbone, num_classes=recipe.num_classes, image_size=recipe.image_size,
                           head_width=recipe.head_width, head_convs=recipe.head_convs,
                           head_act=recipe.head_act or recipe.activation, anchor_size=recipe.anchor_size,
                           **retina_kwargs)


def create_retinanet_spinenet(name: str, **overrides) -> RetinaNet:
    recipe, retina_kwargs = apply_overrides(SPINENET_RETINANETS[name], overrides)
    return build_retinanet_spinenet(recipe, **retina_kwargs)


_ARGUMENTS = (SpineNetRetinaNet, build_retinanet)


@register_model(forwards_to=_ARGUMENTS)
def retinanet_spinenet49s(**kwargs) -> RetinaNet:
    return create_retinanet_spinenet("retinanet_spinenet49s", **kwargs)


@register_model(forwards_to=_ARGUMENTS)
def retinanet_spinenet49(**kwargs) -> RetinaNet:
    return create_retinanet_spinenet("retinanet_spinenet49", **kwargs)


@register_model(forwards_to=_ARGUMENTS)
def retinanet_spinenet96(**kwargs) -> RetinaNet:
    return create_retinanet_spinenet("retinanet_spinenet96", **kwargs)


@register_model(forwards_to=_ARGUMENTS)
def retinanet_spinenet143(**kwargs) -> RetinaNet:
    return create_retinanet_spinenet("retinanet_spinenet143", **kwargs)


@register_model(forwards_to=_ARGUMENTS)
def retinanet_spinenet190(**kwargs) -> RetinaNet:
    return create_retinanet_spinenet("retinanet_spinenet190", **kwargs)


@register_model(forwards_to=_ARGUMENTS)
def retinanet_spinenet49_tiny(**kwargs) -> RetinaNet:
    return create_retinanet_spinenet("retinanet_spinenet49_tiny", **kwargs)
