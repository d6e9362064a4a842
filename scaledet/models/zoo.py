"""Published figures and weight sources of every registered model.

This table is the data ``docs/MODELS.md`` is generated from (``python tools/make_model_zoo.py``),
together with what ``scaledet info`` measures. Each figure cites where it was published, through
the fact files in docs/reference. A registered model without an entry here fails the model-zoo
test, so a new builder comes with its row.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """A published result of the model as it is built by default (its default input size)."""

    accuracy: str                    # e.g. "41.5 AP"
    benchmark: str                   # what it was measured on, e.g. "COCO test-dev"
    source: str                      # who published it, citing docs/reference
    params_m: float | None = None    # published parameter count, millions
    mult_adds_b: float | None = None  # published multiply-adds ("FLOPs" in the papers), billions
    approximate: bool = False        # the size figures are recalled, not confirmed (see the source)


@dataclass(frozen=True)
class ZooEntry:
    published: Published | None = None
    recipe: str | None = None        # packaged config that trains it (scaledet configs)
    release: str | None = None       # where the original framework's trained weights were published
    convert: str | None = None       # `scaledet convert KIND` reading that release
    note: str = ""


_TPU_ZOO = "tensorflow/tpu `models/official/detection/MODEL_ZOO.md`, TF1"
_TF2_GARDEN = "tensorflow/models `official/vision/MODEL_GARDEN.md`, TF2"
_TPU_LAYOUT = f"{_TPU_ZOO} (`--layout tpu`)"
_BOTH_LAYOUTS = f"{_TPU_LAYOUT}, or {_TF2_GARDEN} (`--layout tf2`)"
_SPINENET_PAPER = "SpineNet paper, protocol C, 500 epochs (docs/reference/SPINENET.md §1.13)"

ZOO: dict[str, ZooEntry] = {
    "retinanet_spinenet49s": ZooEntry(
        Published("41.5 AP", "COCO test-dev", _SPINENET_PAPER, 12.0, 33.8),
        recipe="retinanet_spinenet49s_coco", release=_TPU_LAYOUT, convert="tf-retinanet",
        note="endpoints 256 wide as the released checkpoint (docs/reference/SPINENET.md §1.10)"),
    "retinanet_spinenet49": ZooEntry(
        Published("44.3 AP", "COCO test-dev", _SPINENET_PAPER, 28.5, 85.4),
        release=_BOTH_LAYOUTS, convert="tf-retinanet"),
    "retinanet_spinenet96": ZooEntry(
        Published("48.6 AP", "COCO test-dev", _SPINENET_PAPER, 43.0, 265.4),
        release=_BOTH_LAYOUTS, convert="tf-retinanet"),
    "retinanet_spinenet143": ZooEntry(
        Published("50.7 AP", "COCO test-dev", _SPINENET_PAPER, 66.9, 524.4),
        release=_BOTH_LAYOUTS, convert="tf-retinanet"),
    "retinanet_spinenet190": ZooEntry(
        Published("52.1 AP", "COCO test-dev", _SPINENET_PAPER, 163.6, 1885.0),
        release=_TPU_LAYOUT, convert="tf-retinanet"),
    "retinanet_spinenet49_tiny": ZooEntry(
        note="quarter-width SpineNet-49 for CPU demos and tests; `scaledet demo` trains it"),
    "retinanet_nasfpn_r50": ZooEntry(
        Published("42.4 AP", "COCO val2017",
                  "tensorflow/tpu MODEL_ZOO.md, 350 epochs from scratch (docs/reference/NASFPN.md §2.5)",
                  60.3, 140.6),
        recipe="retinanet_nasfpn_r50_coco", release=_TPU_ZOO,
        note="the tensorflow/tpu and TF2 Model Garden form (one head shared by the levels, 80 classes); its "
             "recipe borrows the MindSpore port's settings (average-pool attention, conv P6/P7). "
             "`scaledet convert tf-retinanet --layout tf2` reads TF2 Model Garden R-50 NAS-FPN checkpoints "
             "(docs/CONVERT.md); the tensorflow/tpu release's layout is not mapped. The port's exact network is "
             "retinanet_nasfpn_r50_port"),
    "retinanet_nasfpn_r50_port": ZooEntry(
        Published("41.7 AP", "COCO val2017, images with annotations and no crowd",
                  "MindSpore port README_CN.md (docs/reference/NASFPN.md §2.5; its evaluation subset: "
                  "docs/reference/MINDSPORE_FORMATS.md §3)"),
        recipe="retinanet_nasfpn_r50_port",
        release="mindspore-ai/models `research/cv/nas-fpn` .ckpt files, MindSpore", convert="mindspore-nasfpn",
        note="the MindSpore port exactly: per-level towers without biases, 81 sigmoid channels (background "
             "included), TF 'same' padding, its BN and NMS; 85.89M parameters, the published 60.3M form plus "
             "the unshared towers and the 81st channel (docs/CONVERT.md)"),
    "retinanet_nasfpn_r50_384": ZooEntry(
        Published("45.4 AP", "COCO test-dev",
                  "NAS-FPN paper via a third-party listing; size recalled, unverified "
                  "(docs/reference/NASFPN.md §2.5)", 103.9, None, approximate=True)),
    "retinanet_resnet50_fpn": ZooEntry(
        Published("36.4 AP", "COCO val2017", "torchvision weights metadata (docs/reference/PEERS.md §4.1)", 34.0),
        release="torchvision `retinanet_resnet50_fpn` COCO_V1 weights", convert="torchvision-retinanet",
        note="torchvision's layout rebuilt from scaledet parts"),
    "retinanet_resnet101_fpn": ZooEntry(
        note="torchvision's layout with a ResNet-101 trunk, for which torchvision publishes no weights. "
             "tensorflow/tpu's R101-FPN (its own head and FPN): 43.9 AP val2017, 53.1M / 326.3B at 1024 "
             "(docs/reference/SPINENET.md §1.13)"),
    "blitznet300_r50": ZooEntry(
        Published("78.5 mAP", "VOC07 test, trained on VOC07+12",
                  "BlitzNet paper via a third-party table (docs/reference/BLITZNET.md §4.1)"),
        recipe="blitznet300_r50_voc", release="the dvornikita/blitznet README, TF1", convert="tf-blitznet",
        note="the recipe's target, joint training on VOC12: 80.0 mAP / 72.8 mIoU on VOC12 val "
             "(docs/reference/BLITZNET.md §4.1)"),
    "blitznet512_r50": ZooEntry(
        Published("80.7 mAP", "VOC07 test, trained on VOC07+12",
                  "BlitzNet paper via a third-party table (docs/reference/BLITZNET.md §4.1)"),
        release="the dvornikita/blitznet README, TF1", convert="tf-blitznet"),
    "blitznet_tiny": ZooEntry(note="one narrow unit per trunk stage, for CPU tests"),
}
