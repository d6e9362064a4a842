"""``scaledet convert tf-retinanet``: a TensorFlow RetinaNet checkpoint -> a scaledet checkpoint.

Two layouts (docs/CONVERT.md):

* ``tpu``: the tensorflow/tpu detection code (TF1 variable names), SpineNet backbones;
* ``tf2``: TF2 Model Garden (``tf.train.Checkpoint(model=...)``), SpineNet or ResNet + NAS-FPN.

The layout decides the arithmetic options a model needs to compute what that code computes
(padding, down path, BN, box convention; docs/reference/TF_ARITHMETIC.md). They are ordinary
``create_model`` arguments and are recorded in the converted checkpoint's ``model_args``, so every
command rebuilds the right model from the checkpoint alone. Widths the checkpoint's shapes show
(classes, head width and depth, endpoint or NAS-FPN width) are read from it; any other argument
(e.g. a narrower ``filter_size_scale``) is given by the caller.

Every variable is mapped by structure (:mod:`scaledet.convert.retinanet_tf`); anything unmapped,
left over or of the wrong shape is one :class:`~scaledet.convert.tf_mapping.MappingError` naming
the checkpoint and the variables, raised before anything is written. The output is written
atomically, so an error never leaves a partial file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from scaledet.convert.retinanet_tf import (
    GARDEN_ASPECT_RATIOS,
    GARDEN_NASFPN_OPTIONS,
    GARDEN_NORM,
    GARDEN_RESNET_OPTIONS,
    GARDEN_SPINENET_OPTIONS,
    TPU_ASPECT_RATIOS,
    TPU_NORM,
    TPU_SPINENET_OPTIONS,
    garden_ignored,
    garden_retinanet_mapping,
    tpu_ignored,
    tpu_retinanet_mapping,
)
from scaledet.convert.tf_checkpoint import TFCheckpoint
from scaledet.convert.tf_mapping import MappingError, load_mapped
from scaledet.data.mindrecord_dataset import COCO_CATEGORY_IDS, PORT_COCO_CLASSES
from scaledet.engine.checkpoint import FORMAT, save_atomic
from scaledet.errors import UsageError
from scaledet.models.common import NormSettings
from scaledet.models.detectors.retinanet import RetinaNet
from scaledet.models.detectors.retinanet_resnet import NASFPN_RETINANETS
from scaledet.models.detectors.retinanet_spinenet import SPINENET_RETINANETS
from scaledet.registry import create_model
from scaledet.utils.atomic import check_writable

__all__ = ["CLASS_SETS", "LAYOUTS", "ConversionPlan", "TFLayout", "convert_tf_retinanet", "ignored_variables",
           "parse_model_arg", "plan_conversion", "tf_retinanet_checkpoint"]

# COCO category id -> name (ids 1..90; the ids COCO 2017 does not use have no name).
COCO_NAMES = dict(zip(COCO_CATEGORY_IDS, PORT_COCO_CLASSES[1:]))
# Which TF class channels become model classes (channel c = COCO category id c, 0 = background):
# "coco80" the 80 categories COCO 2017 annotates, "all" every channel but the background.
CLASS_SETS = ("coco80", "all")


def _norm_record(norm: NormSettings) -> dict[str, float]:
    """NormSettings as plain values (checkpoints load with ``weights_only``)."""
    return {"momentum": norm.momentum, "eps": norm.eps}


@dataclass(frozen=True)
class TFLayout:
    """One TF code's checkpoint layout: the model arguments per family and how names map."""

    name: str
    tf_aspect_ratios: tuple[float, ...]
    model_args: Mapping[str, Mapping[str, Any]]  # family -> create_model arguments
    head_prefix: str  # the class net's conv variables, formatted with kind (kernel/bias) and index
    predictor_bias: str  # the class predictor's bias (its length: anchors x TF classes)
    mapping: Callable[..., dict]
    ignored: Callable[..., list]

    def head_key(self, kind: str, index: int | str) -> str:
        return self.head_prefix.format(kind=kind, index=index)


def _tpu_mapping(model: RetinaNet, variable_names: Mapping[str, str], source: str, **kwargs) -> dict:
    return tpu_retinanet_mapping(model.backbone, model.head, **kwargs)


def _garden_mapping(model: RetinaNet, variable_names: Mapping[str, str], source: str, **kwargs) -> dict:
    return garden_retinanet_mapping(model.backbone, model.neck, model.head, variable_names, source=source, **kwargs)


LAYOUTS: dict[str, TFLayout] = {
    "tpu": TFLayout(
        "tpu", TPU_ASPECT_RATIOS,
        {"spinenet": {**TPU_SPINENET_OPTIONS, "norm": _norm_record(TPU_NORM), "box_pixel_offset": 1.0,
                      "drop_zero_boxes": True, "drop_degenerate_boxes": False}},
        "retinanet/class_net/class-{index}/{kind}", "retinanet/class_net/class-predict/bias", _tpu_mapping,
        tpu_ignored),
    "tf2": TFLayout(
        "tf2", GARDEN_ASPECT_RATIOS,
        {"spinenet": {**GARDEN_SPINENET_OPTIONS, "norm": _norm_record(GARDEN_NORM), "drop_degenerate_boxes": False},
         "nasfpn": {**{f"backbone_{k}": v for k, v in GARDEN_RESNET_OPTIONS.items()},
                    **GARDEN_NASFPN_OPTIONS,  # cell_input_width, attention, extra_levels: row fields too
                    "norm": _norm_record(GARDEN_NORM), "backbone_norm": _norm_record(GARDEN_NORM),
                    "frozen_bn": False, "drop_degenerate_boxes": False}},
        "model/_head/_cls_convs/{index}/{kind}/.ATTRIBUTES/VARIABLE_VALUE",
        "model/_head/_classifier/bias/.ATTRIBUTES/VARIABLE_VALUE", _garden_mapping, garden_ignored),
}


def _family(model_name: str) -> str:
    if model_name in SPINENET_RETINANETS:
        return "spinenet"
    if model_name in NASFPN_RETINANETS:
        return "nasfpn"
    known = sorted((*SPINENET_RETINANETS, *NASFPN_RETINANETS))
    raise UsageError(f"--model {model_name}: not a SpineNet or NAS-FPN RetinaNet; convertible: {', '.join(known)}")


def _shape_args(shapes: Mapping[str, Sequence[int]], layout: TFLayout, family: str, num_anchors: int,
                source: str) -> dict[str, int]:
    """Widths the checkpoint's shapes show. Absent variables are left to the mapping check,
    which lists them."""
    args: dict[str, int] = {}
    first = layout.head_key("kernel", 0)
    if first in shapes:
        _, _, width_in, head_width = shapes[first]
        args["head_width"] = head_width
        args["endpoints_num_filters" if family == "spinenet" else "width"] = width_in
        args["head_convs"] = sum(1 for i in range(64) if layout.head_key("kernel", i) in shapes)
    predictor = layout.predictor_bias
    if predictor in shapes:
        outputs = shapes[predictor][0]
        if outputs % num_anchors:
            raise MappingError(f"{source}: {predictor} has {outputs} outputs, not a multiple of "
                               f"{num_anchors} anchors per location")
        args["tf_num_classes"] = outputs // num_anchors
    return args


def _class_channels(tf_num_classes: int, classes: str) -> list[int]:
    if classes not in CLASS_SETS:
        raise UsageError(f"--classes {classes}: unknown; allowed: {', '.join(CLASS_SETS)}")
    if tf_num_classes < 2:
        raise MappingError(f"the checkpoint predicts {tf_num_classes} class channel(s); need the background "
                           "and at least one class")
    if classes == "all":
        return list(range(1, tf_num_classes))
    return [c for c in COCO_CATEGORY_IDS if c < tf_num_classes]


@dataclass(frozen=True)
class ConversionPlan:
    """What a checkpoint converts to: the model's ``create_model`` arguments, the TF class
    channel of each of its classes, and the name mapping (:func:`plan_conversion`)."""

    model: RetinaNet
    model_args: dict[str, Any]
    class_channels: list[int]
    mapping: dict


def plan_conversion(shapes: Mapping[str, Sequence[int]], variable_names: Mapping[str, str], model_name: str,
                    layout: str, *, model_args: Mapping[str, Any] | None = None, classes: str = "coco80",
                    source: str = "checkpoint") -> ConversionPlan:
    """Build the model a checkpoint with these variable ``shapes`` (and object-graph
    ``variable_names``, Model Garden) needs, and map its variables; reads no weights (build under
    ``torch.device("meta")`` to check full-size variable lists cheaply)."""
    if layout not in LAYOUTS:
        raise UsageError(f"--layout {layout}: unknown; allowed: {', '.join(LAYOUTS)}")
    tf_layout = LAYOUTS[layout]
    family = _family(model_name)
    if family not in tf_layout.model_args:
        raise UsageError(f"--layout {layout} holds {', '.join(tf_layout.model_args)} RetinaNets only, "
                         f"not {model_name}")
    user_args = dict(model_args or {})
    num_anchors = int(user_args.get("num_scales", 3)) * len(tf_layout.tf_aspect_ratios)
    seen = _shape_args(shapes, tf_layout, family, num_anchors, source)
    tf_num_classes = seen.pop("tf_num_classes", None)
    channels = _class_channels(tf_num_classes, classes) if tf_num_classes is not None else None
    args = {**tf_layout.model_args[family], **seen, **user_args}
    if channels is not None:
        args["num_classes"] = len(channels)
    model = create_model(model_name, **args)
    mapping = tf_layout.mapping(model, variable_names, source, tf_aspect_ratios=tf_layout.tf_aspect_ratios,
                                class_channels=channels, tf_num_classes=tf_num_classes)
    if not any(name in shapes for name in mapping):
        other = " or ".join(f"--layout {name}" for name in LAYOUTS if name != layout)
        raise MappingError(f"{source}: holds none of the {len(mapping)} variables of a {layout}-layout "
                           f"{model_name} (e.g. {next(iter(mapping))}); is it a {other} checkpoint?")
    return ConversionPlan(model, args, channels or list(range(model.num_classes)), mapping)


def ignored_variables(layout: str, names: Iterable[str]) -> list[str]:
    """Checkpoint entries of ``layout`` that are training state, not weights."""
    return LAYOUTS[layout].ignored(names)


def tf_retinanet_checkpoint(source: str | Path, model_name: str, layout: str, *,
                            model_args: Mapping[str, Any] | None = None, classes: str = "coco80") -> dict:
    """The scaledet checkpoint (a dict ready for ``torch.save``) of a TF RetinaNet checkpoint.

    ``source``: checkpoint prefix, ``.index`` file or directory. ``model_args``: further
    ``create_model`` arguments (they win over the layout's and the checkpoint's shapes).
    ``classes``: which of TF's class channels the model keeps (:data:`CLASS_SETS`).
    """
    checkpoint = TFCheckpoint(source)
    shapes = {name: info.shape for name, info in checkpoint.variables.items()}
    names = checkpoint.variable_names() if layout == "tf2" else {}
    plan = plan_conversion(shapes, names, model_name, layout, model_args=model_args, classes=classes,
                           source=str(checkpoint.prefix))
    load_mapped(plan.model, plan.mapping, checkpoint, ignored=ignored_variables(layout, checkpoint))
    labels = plan.class_channels
    return {
        "model": {k: v.detach().clone() for k, v in plan.model.state_dict().items()},
        "model_name": model_name,
        "model_args": plan.model_args,
        "input_spec": plan.model.input_spec.to_dict(),
        "class_names": [COCO_NAMES.get(c, f"class_{c}") for c in labels],
        "label_to_category_id": labels,
        "format": FORMAT,
        "converted_from": {"checkpoint": str(checkpoint.prefix), "layout": layout, "classes": classes,
                           "tf_variables": len(checkpoint)},
    }


def convert_tf_retinanet(source: str | Path, output: str | Path, model_name: str, layout: str, *,
                         model_args: Mapping[str, Any] | None = None, classes: str = "coco80",
                         force: bool = False) -> dict:
    """Convert and write ``output`` atomically (a temporary file in its folder, then a rename);
    returns the checkpoint. Nothing is written unless the whole conversion succeeded."""
    output = Path(output)
    check_writable(output, force, "checkpoint", "--force")
    payload = tf_retinanet_checkpoint(source, model_name, layout, model_args=model_args, classes=classes)
    save_atomic(payload, output)
    return payload


def parse_model_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as YAML (numbers, booleans, lists), as ``--set`` does."""
    import yaml

    match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", text)
    if not match:
        raise UsageError(f"--arg {text!r}: expected KEY=VALUE")
    try:
        value = yaml.safe_load(match.group(2))
    except yaml.YAMLError as err:
        raise UsageError(f"--arg {text!r}: value is not valid YAML ({str(err).splitlines()[0]})") from None
    return match.group(1), value

