"""Registered RetinaNet + SpineNet models (docs/reference/SPINENET.md §1.10, §1.14-1.16).

Defaults follow the tensorflow/tpu yaml recipes ("protocol C": swish, stochastic depth 0.2,
0.16 for SpineNet-143), the published head widths and anchor sizes, and 91 COCO classes so the
parameter and FLOP counts match the paper. Every builder forwards unknown keyword arguments to
``build_retinanet`` (loss, matching, post-processing, pixel statistics, ...).
"""
from __future__ import annotations

from typing import Any

from scaledet.models.backbones.spinenet import spinenet
from scaledet.models.common import TPU_RETINANET_NORM, NormSettings
from scaledet.models.detectors.retinanet import RetinaNet, build_retinanet
from scaledet.registry import register_model


def _norm_settings(norm: NormSettings | dict | None) -> NormSettings:
    if norm is None:
        return TPU_RETINANET_NORM
    if isinstance(norm, dict):  # from a YAML config: {momentum: ..., eps: ...} in PyTorch convention
        return NormSettings(**norm)
    return norm


SHORT_RUN_NORM = NormSettings(momentum=0.1, eps=1e-3)


def _assemble(variant: str, args: dict[str, Any]) -> RetinaNet:
    """Builds the backbone from the SpineNet fields of ``args`` and hands the rest on."""
    args = dict(args)
    retina_kwargs = args.pop("retina_kwargs")
    norm = _norm_settings(args.pop("norm"))
    activation = args.pop("activation")
    backbone = spinenet(
        variant,
        endpoints_num_filters=args.pop("endpoints_num_filters"),
        filter_size_scale=args.pop("filter_size_scale"),
        resample_alpha=args.pop("resample_alpha"),
        block_repeats=args.pop("block_repeats"),
        activation=activation,
        drop_connect_rate=args.pop("drop_connect_rate"),
        endpoint_activation=args.pop("endpoint_activation"),
        norm=norm,
    )
    # The tpu head uses the same activation and BN settings as the backbone unless told otherwise.
    head_act = args.pop("head_act") or activation
    retina_kwargs.setdefault("head_norm_settings", norm)
    return build_retinanet(backbone, head_act=head_act, **args, **retina_kwargs)


# Each builder spells out its arguments so create_model/config validation can list them.
# filter_size_scale / resample_alpha / block_repeats = None keep the variant's published value.

@register_model(forwards_to=build_retinanet)
def retinanet_spinenet49s(*, num_classes: int = 91, image_size: int = 640, activation: str = "swish",
                          drop_connect_rate: float = 0.2, endpoints_num_filters: int = 256,
                          filter_size_scale: float | None = None, resample_alpha: float | None = None,
                          block_repeats: int | None = None, endpoint_activation: bool = True,
                          norm: NormSettings | dict | None = None, head_width: int = 128,
                          head_convs: int = 4, head_act: str | None = None, anchor_size: float = 3.0,
                          **retina_kwargs) -> RetinaNet:
    """SpineNet-49S @640: 12.0M params / 33.8B multiply-adds published (paper, 41.5 AP test-dev).
    ``endpoints_num_filters=256`` reproduces them; the tpu code's 128 gives 11.3M / 30.8B."""
    return _assemble("49S", locals())


@register_model(forwards_to=build_retinanet)
def retinanet_spinenet49(*, num_classes: int = 91, image_size: int = 640, activation: str = "swish",
                         drop_connect_rate: float = 0.2, endpoints_num_filters: int = 256,
                         filter_size_scale: float | None = None, resample_alpha: float | None = None,
                         block_repeats: int | None = None, endpoint_activation: bool = True,
                         norm: NormSettings | dict | None = None, head_width: int = 256,
                         head_convs: int = 4, head_act: str | None = None, anchor_size: float = 3.0,
                         **retina_kwargs) -> RetinaNet:
    """SpineNet-49 @640: 28.5M params / 85.4B multiply-adds published (44.3 AP test-dev)."""
    return _assemble("49", locals())


@register_model(forwards_to=build_retinanet)
def retinanet_spinenet96(*, num_classes: int = 91, image_size: int = 1024, activation: str = "swish",
                         drop_connect_rate: float = 0.2, endpoints_num_filters: int = 256,
                         filter_size_scale: float | None = None, resample_alpha: float | None = None,
                         block_repeats: int | None = None, endpoint_activation: bool = True,
                         norm: NormSettings | dict | None = None, head_width: int = 256,
                         head_convs: int = 4, head_act: str | None = None, anchor_size: float = 3.0,
                         **retina_kwargs) -> RetinaNet:
    """SpineNet-96 @1024: 43.0M params / 265.4B multiply-adds published (48.6 AP test-dev)."""
    return _assemble("96", locals())


@register_model(forwards_to=build_retinanet)
def retinanet_spinenet143(*, num_classes: int = 91, image_size: int = 1280, activation: str = "swish",
                          drop_connect_rate: float = 0.16, endpoints_num_filters: int = 256,
                          filter_size_scale: float | None = None, resample_alpha: float | None = None,
                          block_repeats: int | None = None, endpoint_activation: bool = True,
                          norm: NormSettings | dict | None = None, head_width: int = 256,
                          head_convs: int = 4, head_act: str | None = None, anchor_size: float = 4.0,
                          **retina_kwargs) -> RetinaNet:
    """SpineNet-143 @1280: 66.9M params / 524.4B multiply-adds published (50.7 AP test-dev)."""
    return _assemble("143", locals())


@register_model(forwards_to=build_retinanet)
def retinanet_spinenet190(*, num_classes: int = 91, image_size: int = 1280, activation: str = "swish",
                          drop_connect_rate: float = 0.2, endpoints_num_filters: int = 512,
                          filter_size_scale: float | None = None, resample_alpha: float | None = None,
                          block_repeats: int | None = None, endpoint_activation: bool = True,
                          norm: NormSettings | dict | None = None, head_width: int = 512,
                          head_convs: int = 7, head_act: str | None = None, anchor_size: float = 4.0,
                          **retina_kwargs) -> RetinaNet:
    """SpineNet-190 @1280: 163.6M params / 1885B multiply-adds published (52.1 AP test-dev)."""
    return _assemble("190", locals())


@register_model(forwards_to=build_retinanet)
def retinanet_spinenet49_tiny(*, num_classes: int = 91, image_size: int = 256, activation: str = "relu",
                              drop_connect_rate: float = 0.0, endpoints_num_filters: int = 64,
                              filter_size_scale: float | None = 0.25, resample_alpha: float | None = None,
                              block_repeats: int | None = None, endpoint_activation: bool = True,
                              norm: NormSettings | dict | None = None, head_width: int = 64,
                              head_convs: int = 2, head_act: str | None = None, anchor_size: float = 3.0,
                              **retina_kwargs) -> RetinaNet:
    """SpineNet-49 wiring at quarter width with a 2x64 head: a CPU-sized model for demos/tests.

    BN running statistics use PyTorch's momentum 0.1 by default: the TPU's 0.997 decay needs
    thousands of steps to settle, longer than the short runs this model is for.
    """
    if norm is None:
        norm = SHORT_RUN_NORM
    return _assemble("49", locals())
