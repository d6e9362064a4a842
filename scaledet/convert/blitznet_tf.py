"""BlitzNet checkpoints of the authors' TensorFlow code (dvornikita/blitznet) and the TF-slim
``resnet_v1_50`` ImageNet checkpoint it starts from, mapped onto scaledet's BlitzNet.

The mapping is derived from the scaledet model's structure, walked in the TF code's scopes
(docs/reference/BLITZNET.md §8.1-8.2, variable names as in ``shared/data/blitznet_tf_ref``):

* trunk ``resnet_v1_50/conv1`` and ``resnet_v1_50/block<b>/unit_<u>/bottleneck_v1/{shortcut,conv1,
  conv2,conv3}``, each ``weights`` + ``BatchNorm/{gamma,beta,moving_mean,moving_variance}``;
* down-scale stream ``ssd/block<5..>/unit_<u>/bottleneck_v1/...`` (no shortcut conv: 2048 -> 2048);
* up-scale stream ``ssd_back/block_rev<k>/{shortcut,conv1,conv2,conv3}``, ``k`` counting down
  from the coarsest ResSkip (rev6 at 300, rev7 at 512) to rev1 (x4) or rev2;
* heads ``ssd/{location,confidence}/<source>/{weights,biases}`` with sources
  ``ssd_back/block_rev<k>`` and ``ssd/pool6``; segmentation ``ssd/Conv``, ``ssd/Conv_1`` ... one per
  source in source order, then the classifier ``ssd/Conv_<n>``.

Conventions the conversion itself applies: HWIO kernels become OIHW; the first conv was trained
on BGR inputs and scaledet feeds RGB, so its input channels are reversed. Head channel layouts
(``a * 4 + coord`` with (tx, ty, tw, th), ``a * 21 + class`` with class 0 = background), the
default-box order and the BN arithmetic already coincide with scaledet's, so nothing else is
permuted. The one piece of TF arithmetic scaledet needs an option for, the up-stream's TF1
legacy bilinear resize, is recorded in the model arguments (``upsample: tf_legacy``).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from scaledet.convert.tf_mapping import Assignment, MappingError, bn_assignments
from scaledet.models.backbones.blitz_resnet import BlitzResNet, MsraBottleneck
from scaledet.models.detectors.blitznet import BlitzNet

__all__ = ["BGR_TO_RGB", "TF_BLITZNET_OPTIONS", "blitznet_tf_args", "blitznet_tf_ignored", "blitznet_tf_mapping",
           "convert_blitznet_tf", "load_tfslim_trunk", "tfslim_resnet_ignored", "tfslim_resnet_mapping"]

BGR_TO_RGB = (2, 1, 0)
TRUNK_SCOPE = "resnet_v1_50"
# Model options that make scaledet compute what the authors' TF1 graph computes.
TF_BLITZNET_OPTIONS = {"upsample": "tf_legacy"}
_TRAINING_STATE = ("/Adam", "/Adam_1", "/Momentum", "/ExponentialMovingAverage")


def _slim_conv(tf_prefix: str, key: str, *, bias: bool = False,
               in_index: tuple[int, ...] | None = None) -> dict[str, Assignment]:
    """A slim conv: ``<prefix>/weights`` (and ``/biases``) -> ``<key>.weight`` (``.bias``)."""
    out = {f"{tf_prefix}/weights": Assignment(f"{key}.weight", "conv", in_index=in_index)}
    if bias:
        out[f"{tf_prefix}/biases"] = Assignment(f"{key}.bias")
    return out


def _slim_conv_bn(tf_prefix: str, conv_key: str, bn_key: str, **conv_options) -> dict[str, Assignment]:
    return {**_slim_conv(tf_prefix, conv_key, **conv_options), **bn_assignments(f"{tf_prefix}/BatchNorm", bn_key)}


def _bottleneck(tf_prefix: str, key: str, unit: MsraBottleneck) -> dict[str, Assignment]:
    out = {}
    if unit.downsample is not None:
        out.update(_slim_conv_bn(f"{tf_prefix}/shortcut", f"{key}.downsample.0", f"{key}.downsample.1"))
    for i in (1, 2, 3):
        out.update(_slim_conv_bn(f"{tf_prefix}/conv{i}", f"{key}.conv{i}", f"{key}.bn{i}"))
    return out


def _stage(scope: str, key: str, stage) -> dict[str, Assignment]:
    out = {}
    for u, unit in enumerate(stage):
        out.update(_bottleneck(f"{scope}/unit_{u + 1}/bottleneck_v1", f"{key}.{u}", unit))
    return out


def tfslim_resnet_mapping(trunk: BlitzResNet, key_prefix: str = "") -> dict[str, Assignment]:
    """TF-slim ``resnet_v1_50/...`` names -> the trunk's state-dict keys (``key_prefix`` + key).

    The TF-slim ImageNet checkpoint and the BlitzNet trunk share these names and shapes; the
    first conv's input channels are turned from BGR to RGB."""
    at = f"{key_prefix}." if key_prefix else ""
    out = _slim_conv_bn(f"{TRUNK_SCOPE}/conv1", f"{at}conv1", f"{at}bn1", in_index=BGR_TO_RGB)
    for b, stage in enumerate((trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4), start=1):
        out.update(_stage(f"{TRUNK_SCOPE}/block{b}", f"{at}layer{b}", stage))
    return out


def blitznet_tf_mapping(model: BlitzNet) -> dict[str, Assignment]:
    """TF variable name -> assignment for the whole BlitzNet (trunk, streams, heads)."""
    out = tfslim_resnet_mapping(model.backbone, "backbone")
    streams = model.streams
    for j, stage in enumerate(streams.down):
        out.update(_stage(f"ssd/block{5 + j}", f"streams.down.{j}", stage))
    first_rev = len(streams.down) + 3
    for i, block in enumerate(streams.up):
        scope, key = f"ssd_back/block_rev{first_rev - i}", f"streams.up.{i}"
        if block.projection is not None:
            out.update(_slim_conv_bn(f"{scope}/shortcut", f"{key}.projection.0", f"{key}.projection.1"))
        for c, (conv, bn) in enumerate(((0, 1), (3, 4), (6, 7)), start=1):
            out.update(_slim_conv_bn(f"{scope}/conv{c}", f"{key}.residual.{conv}", f"{key}.residual.{bn}"))
    finest_rev = first_rev - len(streams.up) + 1
    sources = [f"ssd_back/block_rev{finest_rev + j}" for j in range(len(streams.up))] + ["ssd/pool6"]
    if len(sources) != len(model.det_head.loc):
        raise MappingError(f"the model has {len(model.det_head.loc)} detection sources, the TF layout {len(sources)}")
    for j, source in enumerate(sources):
        out.update(_slim_conv(f"ssd/location/{source}", f"det_head.loc.{j}", bias=True))
        out.update(_slim_conv(f"ssd/confidence/{source}", f"det_head.conf.{j}", bias=True))
    seg_names = ["ssd/Conv"] + [f"ssd/Conv_{n}" for n in range(1, len(sources) + 1)]
    for j, name in enumerate(seg_names[:-1]):
        out.update(_slim_conv(name, f"seg_head.reduce.{j}", bias=True))
    out.update(_slim_conv(seg_names[-1], "seg_head.classifier", bias=True))
    return out


def _is_training_state(name: str) -> bool:
    return name in ("global_step", "beta1_power", "beta2_power") or name.endswith(_TRAINING_STATE)


def blitznet_tf_ignored(names: Iterable[str]) -> list[str]:
    """Entries of a checkpoint written by the authors' training.py that are training state
    (optimizer slots and counters), not weights."""
    return [n for n in names if _is_training_state(n)]


def tfslim_resnet_ignored(names: Iterable[str]) -> list[str]:
    """Entries of the TF-slim ImageNet ResNet-50 checkpoint that the BlitzNet trunk does not use:
    the ImageNet classifier (``resnet_v1_50/logits``) and training state. A BlitzNet checkpoint
    used as a backbone source also holds its streams and heads (``ssd/...``, ``ssd_back/...``)."""
    return [n for n in names if _is_training_state(n) or n.startswith((f"{TRUNK_SCOPE}/logits/", "ssd/", "ssd_back/"))]


def load_tfslim_trunk(trunk: BlitzResNet, path) -> None:
    """Fill a BlitzNet trunk from a TF-slim ``resnet_v1_50`` checkpoint (or a BlitzNet TF
    checkpoint's trunk): every trunk entry must be filled and every ``resnet_v1_50/`` variable but
    the ImageNet classifier used, else the error lists what is left over or missing."""
    from scaledet.convert.tf_checkpoint import TFCheckpoint
    from scaledet.convert.tf_mapping import load_mapped

    checkpoint = TFCheckpoint(path)
    load_mapped(trunk, tfslim_resnet_mapping(trunk), checkpoint, ignored=tfslim_resnet_ignored(checkpoint))


def _shape(shapes: Mapping[str, Sequence[int]], name: str, source: str) -> tuple[int, ...]:
    if name not in shapes:
        raise MappingError(f"{source}: has no variable {name}; not a BlitzNet checkpoint of the authors' code")
    return tuple(shapes[name])


def blitznet_tf_args(shapes: Mapping[str, Sequence[int]], *, source: str = "checkpoint") -> tuple[str, dict]:
    """The registered model name and the ``create_model`` arguments a checkpoint's variables
    describe: input size (300 has ssd/block5-7, 512 adds block8), x4 (``block_rev1`` exists),
    classes and widths from the head and stem shapes."""
    stem = _shape(shapes, f"{TRUNK_SCOPE}/conv1/weights", source)
    divisor, remainder = divmod(64, stem[3])
    if remainder or divisor < 1:
        raise MappingError(f"{source}: the first conv has {stem[3]} outputs; 64 or a divisor of it expected")
    image_size = 512 if "ssd/block8/unit_1/bottleneck_v1/conv1/weights" in shapes else 300
    x4 = "ssd_back/block_rev1/conv1/weights" in shapes
    first_source = "ssd_back/block_rev1" if x4 else "ssd_back/block_rev2"
    loc = _shape(shapes, f"ssd/location/{first_source}/biases", source)
    conf = _shape(shapes, f"ssd/confidence/{first_source}/biases", source)
    anchors = loc[0] // 4
    num_outputs, remainder = divmod(conf[0], anchors)
    if remainder or num_outputs < 2:
        raise MappingError(f"{source}: {conf[0]} class outputs for {anchors} boxes per location")
    seg = _shape(shapes, "ssd/Conv/weights", source)
    aspect_ratios = {6: (2.0, 3.0), 4: (2.0,)}.get(anchors)
    if aspect_ratios is None:
        raise MappingError(f"{source}: {anchors} boxes per location; the reference uses 6 (or 4)")
    args = {"num_classes": num_outputs - 1, "x4": x4, "width_divisor": divisor, **TF_BLITZNET_OPTIONS}
    if seg[0] != 1:
        args["seg_kernel"] = seg[0]
    if seg[3] != 64 // divisor:
        args["seg_channels"] = seg[3]
    if aspect_ratios != (2.0, 3.0):
        args["aspect_ratios"] = aspect_ratios
    return ("blitznet512_r50" if image_size == 512 else "blitznet300_r50"), args


def convert_blitznet_tf(path, *, class_names: Sequence[str] | None = None) -> dict:
    """A scaledet checkpoint payload (not yet written) for a BlitzNet TF checkpoint: the model is
    rebuilt from the variables' shapes, every variable is mapped (or the error lists what is not),
    and the TF test-time conventions are recorded so ``model_from_checkpoint`` needs no flags:
    ``model_args`` (widths, x4, classes, ``upsample: tf_legacy``) and the input spec (caffe-style
    x255 - mean, the TF1 legacy resize of the test pipeline)."""
    from dataclasses import replace

    from scaledet.convert.tf_checkpoint import TFCheckpoint
    from scaledet.convert.tf_mapping import load_mapped
    from scaledet.data.voc_files import VOC_CLASSES
    from scaledet.models.convert import CHECKPOINT_FORMAT
    from scaledet.registry import create_model

    checkpoint = TFCheckpoint(path)
    shapes = {name: info.shape for name, info in checkpoint.variables.items()}
    name, args = blitznet_tf_args(shapes, source=str(checkpoint.prefix))
    model = create_model(name, **args)
    load_mapped(model, blitznet_tf_mapping(model), checkpoint, ignored=blitznet_tf_ignored(checkpoint))
    spec = replace(model.input_spec, resize_method="tf_legacy")
    if class_names is None and args["num_classes"] == len(VOC_CLASSES):
        class_names = VOC_CLASSES
    return {"model": model.state_dict(), "model_name": name, "model_args": args, "input_spec": spec.to_dict(),
            "class_names": list(class_names) if class_names else None, "label_to_category_id": None,
            "format": CHECKPOINT_FORMAT, "source": {"tf_checkpoint": str(checkpoint.prefix), "variables": len(shapes)}}
