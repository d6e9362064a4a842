"""The Detector contract (docs/CONTRACTS.md): input spec, declared attributes and methods,
table-driven registration, one norm coercion, and no attribute probes of models."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import scaledet
from scaledet import registry
from scaledet.data.input_spec import IMAGENET_MEAN, InputSpec, eval_transform
from scaledet.data.ssd_transforms import SSDEvalTransform
from scaledet.data.transforms import EvalTransform
from scaledet.engine.checkpoint import FORMAT, save_atomic
from scaledet.engine.inference import model_from_checkpoint
from scaledet.errors import ModelArgumentError, ScaledetError, UnknownModelError, UsageError
from scaledet.models.common import NormSettings, norm_settings
from scaledet.models.detectors.blitznet import BLITZNET_MEAN
from scaledet.models.detectors.retinanet import build_retinanet
from scaledet.models.detectors.retinanet_spinenet import (
    SPINENET_RETINANETS,
    SpineNetRetinaNet,
    create_retinanet_spinenet,
)

TINY_RETINA = dict(num_classes=3, head_width=32, endpoints_num_filters=32)


def test_input_spec_round_trips_and_validates():
    spec = InputSpec(300, BLITZNET_MEAN, (1 / 255,) * 3, size_divisor=1, resize_mode="square")
    stored = spec.to_dict()
    assert stored["pixel_mean"] == list(BLITZNET_MEAN) and stored["resize_mode"] == "square"
    assert InputSpec.from_dict({**stored, "model_name": "ignored"}) == spec
    assert InputSpec.from_dict({"image_size": 64}) == InputSpec(64)  # older files: the defaults
    assert spec.with_image_size(512).image_size == 512 and spec.with_image_size(None) is spec
    for bad, message in [(dict(resize_mode="fit"), "allowed: long_side, square"),
                         (dict(size_divisor=0), "size_divisor"), (dict(image_size=-3), "image_size"),
                         (dict(pixel_std=(1.0, 0.0, 1.0)), "non-zero")]:
        with pytest.raises(UsageError, match=message):
            InputSpec(**{"image_size": 64, **bad})
    with pytest.raises(UsageError, match="m.onnx: incomplete input spec"):
        InputSpec.from_dict({"pixel_mean": [0, 0, 0]}, source="m.onnx")


def test_eval_transform_follows_the_resize_mode():
    assert isinstance(eval_transform(InputSpec(64)), EvalTransform)
    square = eval_transform(InputSpec(64, resize_mode="square"))
    assert isinstance(square, SSDEvalTransform)
    image, target = square(torch.zeros(3, 30, 50, dtype=torch.uint8))
    assert image.shape == (3, 64, 64) and target["scale"] == (64 / 30, 64 / 50)


@pytest.mark.parametrize("name", scaledet.list_models())
def test_every_registered_model_declares_the_contract(name):
    with torch.device("meta"):
        model = scaledet.create_model(name)
    spec = model.input_spec
    blitz = name.startswith("blitznet")
    assert model.model_name == name and model.has_mask is blitz
    # BlitzNet and the MindSpore NAS-FPN port stretch the image to a square; other RetinaNets keep its aspect
    expected = ("square", 1) if blitz else ("square", 128) if name.endswith("_port") else ("long_side", 128)
    assert (spec.resize_mode, spec.size_divisor) == expected
    assert spec.pixel_mean == (pytest.approx(BLITZNET_MEAN) if blitz else IMAGENET_MEAN)
    assert (model.pixel_mean, model.size_divisor, model.default_image_size) == (
        spec.pixel_mean, spec.size_divisor, spec.image_size)
    assert model.class_names is None and model.label_to_category_id is None
    assert model.criterion is not None and model.postprocessor is not None
    assert [f.stride for f in model.feature_info] == sorted(f.stride for f in model.feature_info)


@pytest.mark.parametrize("name, kwargs, size", [
    ("retinanet_spinenet49_tiny", TINY_RETINA, (200, 300)),  # padded to 256 x 384 by forward
    ("retinanet_resnet50_fpn", dict(num_classes=2), (128, 256)),
    ("blitznet_tiny", dict(num_classes=3), (96, 160)),
    ("retinanet_nasfpn_r50_port", dict(num_classes=3, width_multiplier=0.0625, width=8, num_stacks=1,
                                       head_width=8), (128, 128)),
])
def test_num_anchors_is_the_length_of_the_predictions_and_masks_follow_has_mask(name, kwargs, size):
    torch.manual_seed(0)
    model = scaledet.create_model(name, **kwargs).eval()
    images = torch.randn(1, 3, *size)
    with torch.no_grad():
        outputs = model(images)
        post = model.postprocess(outputs, [size])
    if "cls_logits" in outputs:
        predictions = sum(t.shape[-2] * t.shape[-1] for t in outputs["cls_logits"]) * model.head.num_anchors
        generated = sum(len(a) for a in model.anchor_generator(
            [tuple(t.shape[-2:]) for t in outputs["cls_logits"]]))
        assert generated == predictions
    else:
        predictions = outputs["conf"].shape[1]
    assert model.num_anchors(*size) == predictions
    assert ("mask" in post) is model.has_mask


def test_loss_normaliser_hook_reaches_the_criterion():
    torch.manual_seed(0)
    model = scaledet.create_model("retinanet_spinenet49_tiny", **TINY_RETINA)
    images = torch.randn(2, 3, 128, 128)
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])}] * 2
    with torch.no_grad():
        outputs = model(images)
        local = model.loss(outputs, targets)
        model.distribute_loss_normalizer(lambda count: count * 4, 2)  # the other process had 3x the positives
        shared = model.loss(outputs, targets)
        model.distribute_loss_normalizer(None, 2)
        restored = model.loss(outputs, targets)
    positives = float(local["num_positives"])
    expected_ratio = (positives + 1) / ((4 * positives + 1) / 2)
    torch.testing.assert_close(shared["cls_loss"], local["cls_loss"] * expected_ratio)
    torch.testing.assert_close(restored["loss"], local["loss"])


def test_checkpoint_carries_input_spec_class_names_and_label_map(tmp_path):
    model = scaledet.create_model("retinanet_spinenet49_tiny", **TINY_RETINA)
    stored = model.input_spec.with_image_size(192).to_dict() | {"pixel_mean": [0.5, 0.5, 0.5]}
    args = dict(TINY_RETINA)
    save_atomic({"format": FORMAT, "model_name": "retinanet_spinenet49_tiny", "model_args": args,
                 "model": model.state_dict(), "input_spec": stored, "class_names": ["a", "b", "c"],
                 "label_to_category_id": [1, 3, 7]}, tmp_path / "c.pt")
    loaded = model_from_checkpoint(tmp_path / "c.pt")
    assert loaded.input_spec == InputSpec(192, (0.5, 0.5, 0.5), size_divisor=128)
    assert loaded.class_names == ["a", "b", "c"] and loaded.label_to_category_id == [1, 3, 7]
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    del state["input_spec"]  # a checkpoint written before input specs were stored
    save_atomic(state, tmp_path / "old.pt")
    assert model_from_checkpoint(tmp_path / "old.pt").input_spec == model.input_spec


def test_a_variant_is_one_table_row_and_a_two_line_function(monkeypatch):
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    monkeypatch.setattr(registry, "_FORWARDS_TO", dict(registry._FORWARDS_TO))
    # --- what adding a variant takes: one row ...
    monkeypatch.setitem(SPINENET_RETINANETS, "retinanet_spinenet49s_384",
                        SpineNetRetinaNet("49S", image_size=384, head_width=64, anchor_size=4.0))

    # ... and two lines (plus the decorator)
    @registry.register_model(forwards_to=(SpineNetRetinaNet, build_retinanet))
    def retinanet_spinenet49s_384(**kwargs):
        return create_retinanet_spinenet("retinanet_spinenet49s_384", **kwargs)

    assert registry.builder_arguments("retinanet_spinenet49s_384") == registry.builder_arguments(
        "retinanet_spinenet49s")
    with torch.device("meta"):
        model = scaledet.create_model("retinanet_spinenet49s_384", num_classes=5, max_detections=7)
    assert model.model_name == "retinanet_spinenet49s_384" and model.default_image_size == 384
    assert model.head.cls_tower.predictor.in_channels == 64 and model.num_classes == 5
    assert model.anchor_generator.sizes[0][0] == 4.0 * 8 and model.postprocessor.max_detections == 7
    # the row's SpineNet scaling is 49S's: stem group width 64 * 0.65
    assert model.backbone.stem_groups[0][0].branch[0][0].out_channels == int(64 * 0.65)
    with pytest.raises(ModelArgumentError, match="allowed: .*endpoints_num_filters"):
        scaledet.create_model("retinanet_spinenet49s_384", endpoint_filters=3)


def test_norm_settings_is_the_one_coercion():
    default = NormSettings(momentum=0.01, eps=1e-3)
    assert norm_settings(None, default) is default
    assert norm_settings({"eps": 0.5}, default) == NormSettings(eps=0.5)
    assert norm_settings(NormSettings(0.2, 0.1), default) == NormSettings(0.2, 0.1)
    with pytest.raises(UsageError, match="take momentum, eps; got unknown decay"):
        norm_settings({"decay": 0.9}, default)


def test_user_errors_are_scaledet_errors_and_keep_their_builtin_base():
    with pytest.raises(UnknownModelError) as err:
        scaledet.create_model("retinanet_spinenet50")
    assert isinstance(err.value, (ScaledetError, KeyError)) and str(err.value).startswith("unknown model 'retina")
    with pytest.raises(TypeError):  # ModelArgumentError is still a TypeError for existing callers
        scaledet.create_model("blitznet_tiny", no_such_argument=1)


def test_nothing_in_scaledet_probes_a_model_for_attributes():
    probe = re.compile(r"\b(getattr|hasattr)\(\s*(model|self\.model|reference|predictor|criterion|post|head)\b")
    root = Path(scaledet.__file__).parent
    found = [f"{path.relative_to(root)}:{n}" for path in sorted(root.rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if probe.search(line)]
    assert found == []
