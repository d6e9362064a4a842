"""BlitzNet checkpoints of the authors' TF code against what that code computed
(shared/data/blitznet_tf_ref: a width/8 BlitzNet300 x4 checkpoint, its inputs, outputs and
end points, and the full-size variable lists; see its SOURCE.md)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

import scaledet
from scaledet.cli.main import main
from scaledet.convert.blitznet_tf import (blitznet_tf_args, blitznet_tf_ignored, blitznet_tf_mapping,
                                          tfslim_resnet_ignored, tfslim_resnet_mapping)
from scaledet.convert.tf_mapping import MappingError, check_mapping
from scaledet.data.input_spec import InputSpec, eval_transform
from scaledet.data.resize import upsampled_labels
from scaledet.engine.inference import model_from_checkpoint

IMAGES = ("2007_000032", "2007_000129")
# TF's own Eigen and oneDNN kernels differ by up to 1.3e-3 on these logits (SOURCE.md).
RAW_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def fixture_dir(shared_data):
    folder = shared_data / "blitznet_tf_ref"
    if not (folder / "ckpt").is_dir():
        pytest.skip("blitznet_tf_ref fixture absent")
    return folder


@pytest.fixture(scope="module")
def converted_path(fixture_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("bz") / "blitznet_tf.pt"
    assert main(["convert", "tf-blitznet", str(fixture_dir / "ckpt"), str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def converted(converted_path):
    return model_from_checkpoint(converted_path)


@pytest.fixture(scope="module")
def run(converted, fixture_dir):
    """The converted model on the two JPEGs, through its own (recorded) input pipeline."""
    transform = eval_transform(converted.input_spec)
    inputs, targets = zip(*(transform(Image.open(fixture_dir.parent / "voc2012_first100" / "JPEGImages"
                                                 / f"{name}.jpg").convert("RGB")) for name in IMAGES))
    images = torch.stack(inputs)
    with torch.inference_mode():
        outputs = converted(images)
    return images, targets, outputs


def test_cli_refuses_to_overwrite_and_names_bad_input(converted_path, tmp_path, capsys):
    assert main(["convert", "tf-blitznet", str(tmp_path), str(converted_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", "tf-blitznet", str(tmp_path), str(tmp_path / "out.pt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0] and not (tmp_path / "out.pt").exists()


def test_recorded_conventions(converted):
    assert converted.model_name == "blitznet300_r50"
    assert converted.input_spec.resize_method == "tf_legacy"
    assert converted.streams.up[0].upsample == "tf_legacy"
    assert converted.class_names[0] == "aeroplane" and converted.num_classes == 20


def test_input_pipeline_is_the_references(run, fixture_dir):
    images, _, _ = run
    rgb01 = np.load(fixture_dir / "inputs_rgb01_300.npy")
    # the reference's graph: x255, BGR, minus the BGR mean (SOURCE.md "Inputs"); back to RGB here
    expected = ((rgb01 * np.float32(255))[..., ::-1] - np.float32([103.062623801, 115.902882574, 123.151630838]))
    np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), expected[..., ::-1])


def test_raw_outputs_and_endpoints(converted, run, fixture_dir):
    images, _, outputs = run
    raw = np.load(fixture_dir / "outputs_raw.npz")
    errors = {"conf": np.abs(outputs["conf"].numpy() - raw["conf_logits"]).max(),
              "loc": np.abs(outputs["loc"].numpy() - raw["loc"]).max(),
              "seg": np.abs(outputs["seg"].permute(0, 2, 3, 1).numpy() - raw["seg_logits"]).max()}
    print("max |diff| raw:", {k: f"{v:.2e}" for k, v in errors.items()})
    assert max(errors.values()) <= RAW_TOLERANCE, errors

    ends = np.load(fixture_dir / "endpoints_img0.npz")
    with torch.inference_mode():
        trunk = converted.backbone(images[:1])
        ours = {f"resnet_v1_50/block{b}": trunk[b - 1] for b in (2, 3, 4)}
        x = trunk[-1]
        for j, block in enumerate(converted.streams.down):
            x = block(x)
            ours[f"ssd/block{5 + j}"] = x
        sources = converted.streams(trunk)
        ours["ssd/pool6"] = sources[-1]
        for j, source in enumerate(sources[1:-1], start=2):  # rev1 is not in the fixture
            ours[f"ssd_back/block_rev{j}"] = source
        # the first ResSkip's projection shortcut, whose mean is pool6
        first = converted.streams.up[0]
        skip = converted.streams.down[-2](converted.streams.down[-3](trunk[-1]))
        from scaledet.data.resize import resize_bilinear
        ours["ssd_back/block_rev6/shortcut"] = first.projection(resize_bilinear(x, skip.shape[-2:], "tf_legacy"))
    assert {f"img0/{k}" for k in ours} == set(ends.keys())
    end_errors = {k: float(np.abs(v.permute(0, 2, 3, 1).numpy() - ends[f"img0/{k}"]).max()) for k, v in ours.items()}
    print("max |diff| end points:", {k: f"{v:.1e}" for k, v in end_errors.items()})
    assert max(end_errors.values()) <= RAW_TOLERANCE, end_errors


def test_masks_and_final_detections(converted, run, fixture_dir):
    _, targets, outputs = run
    post = np.load(fixture_dir / "outputs_post.npz")
    jpegs = [fixture_dir.parent / "voc2012_first100" / "JPEGImages" / f"{n}.jpg" for n in IMAGES]
    predictions = converted.predict(jpegs, batch_size=2)
    for i, (target, prediction) in enumerate(zip(targets, predictions)):
        # reference: logits resized (TF1 legacy bilinear) to the original size, then argmax
        labels = upsampled_labels(outputs["seg"][i], target["orig_size"], "tf_legacy").numpy()
        agree = float((labels == post[f"img{i}_mask"]).mean())
        print(f"image {i}: mask agreement {agree:.6f}")
        assert agree >= 0.999

        tf_boxes = post[f"img{i}_final_boxes_xywh_px"]
        tf_classes = post[f"img{i}_final_classes"]
        tf_scores = post[f"img{i}_final_scores"]
        boxes = prediction["boxes"].numpy()
        boxes = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        classes = prediction["labels"].numpy() + 1  # TF class 0 is the background
        assert len(boxes) == len(tf_boxes) == 200
        unmatched, worst_box, worst_score = [], 0.0, 0.0
        used = set()
        for box, cls, score in zip(tf_boxes, tf_classes, tf_scores):
            same = [j for j in np.flatnonzero(classes == cls) if j not in used]
            dist = [np.abs(boxes[j] - box).max() for j in same]
            if not dist or min(dist) > 0.05:
                unmatched.append((int(cls), float(score)))
                continue
            j = same[int(np.argmin(dist))]
            used.add(j)
            worst_box = max(worst_box, min(dist))
            worst_score = max(worst_score, abs(float(prediction["scores"][j]) - float(score)))
        print(f"image {i}: unmatched {unmatched}, max box diff {worst_box:.4f} px, max score diff {worst_score:.1e}")
        assert not unmatched and worst_score < 1e-4


def test_postprocessing_on_tf_outputs(converted, fixture_dir):
    """scaledet's decode + NMS on the TF raw outputs gives the TF detections."""
    raw = np.load(fixture_dir / "outputs_raw.npz")
    post = np.load(fixture_dir / "outputs_post.npz")
    anchors = np.load(fixture_dir / "anchors.npz")["xywh"]
    ours = converted.anchors((300, 300)).numpy()
    np.testing.assert_allclose(np.concatenate([ours[:, :2], ours[:, 2:] - ours[:, :2]], 1), anchors, atol=2e-7)
    out = converted.postprocess({"loc": torch.from_numpy(raw["loc"]), "conf": torch.from_numpy(raw["conf_logits"])},
                                [(300, 300), (300, 300)])
    for i in range(2):
        n = int(out["num_detections"][i])
        scores = out["scores"][i, :n].numpy()
        np.testing.assert_allclose(np.sort(scores)[::-1], post[f"img{i}_final_scores"], atol=1e-6)
        labels = out["labels"][i, :n].numpy() + 1
        assert sorted(labels.tolist()) == sorted(post[f"img{i}_final_classes"].tolist())


def _shapes(path):
    with open(path) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {r["name"]: tuple(int(v) for v in r["shape"].split("x")) if r["shape"] not in ("", "scalar") else ()
            for r in rows}


@pytest.mark.parametrize("name", ["blitznet300_x4_resnet50", "blitznet300_nox4_resnet50", "blitznet512_x4_resnet50",
                                  "blitznet512_nox4_resnet50", "blitznet300_x4_resnet50_traingraph"])
def test_full_size_variable_lists_map_completely(fixture_dir, name):
    shapes = _shapes(fixture_dir / "varlists" / f"{name}.tsv")
    model_name, args = blitznet_tf_args(shapes, source=name)
    assert args["width_divisor"] == 1 and args["x4"] == ("nox4" not in name)
    with torch.device("meta"):  # shapes only: no 60M-parameter allocation
        model = scaledet.create_model(model_name, **args)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapping = blitznet_tf_mapping(model)
    check_mapping(mapping, shapes, state, source=name, ignored=blitznet_tf_ignored(shapes))
    weights = [n for n in shapes if n not in blitznet_tf_ignored(shapes)]
    assert len(mapping) == len(weights) == {"blitznet300_x4_resnet50": 494, "blitznet300_nox4_resnet50": 473,
                                            "blitznet512_x4_resnet50": 545, "blitznet512_nox4_resnet50": 524,
                                            "blitznet300_x4_resnet50_traingraph": 494}[name]


def test_leftovers_and_shape_mismatches_are_listed(fixture_dir):
    shapes = _shapes(fixture_dir / "ckpt" / "variables.tsv")
    name, args = blitznet_tf_args(shapes)
    with torch.device("meta"):
        model = scaledet.create_model(name, **args)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes["ssd/extra_conv/weights"] = (3, 3, 8, 8)
    shapes["ssd/Conv_7/biases"] = (22,)
    del shapes["ssd_back/block_rev3/conv2/BatchNorm/beta"]
    with pytest.raises(MappingError) as err:
        check_mapping(blitznet_tf_mapping(model), shapes, state, source="ckpt", ignored=blitznet_tf_ignored(shapes))
    message = str(err.value)
    assert "ssd/extra_conv/weights" in message and "ssd/Conv_7/biases [22]" in message
    assert "ssd_back/block_rev3/conv2/BatchNorm/beta" in message and "\n" not in message


def test_pretrained_backbone_from_a_tf_slim_checkpoint(fixture_dir, converted):
    """The fixture's ``resnet_v1_50/...`` variables use the names of TF-slim's ImageNet checkpoint;
    the trunk loads from them directly and the input spec becomes caffe-style."""
    model = scaledet.create_model("blitznet300_r50", width_divisor=8,
                                  pretrained_backbone=str(fixture_dir / "ckpt" / "blitznet300_x4_r50_w8"))
    for key, value in converted.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    assert model.input_spec.pixel_std == pytest.approx((1 / 255,) * 3)
    assert model.input_spec.pixel_mean[0] == pytest.approx(123.151630838 / 255)
    with pytest.raises(MappingError) as err:  # strict: a trunk of another width lists the mismatches
        scaledet.create_model("blitznet300_r50", width_divisor=4,
                              pretrained_backbone=str(fixture_dir / "ckpt" / "blitznet300_x4_r50_w8"))
    assert "265 shape mismatches" in str(err.value) and "-> layer1.0.bn3.weight [64]" in str(err.value)


def test_tf_slim_resnet_v1_50_variable_list_maps_completely(fixture_dir):
    shapes = _shapes(fixture_dir / "varlists" / "tfslim_resnet_v1_50.tsv")
    with torch.device("meta"):
        trunk = scaledet.create_model("blitznet300_r50").backbone
    state = {k: tuple(v.shape) for k, v in trunk.state_dict().items()}
    ignored = tfslim_resnet_ignored(shapes)
    assert sorted(ignored) == ["resnet_v1_50/logits/biases", "resnet_v1_50/logits/weights"]
    check_mapping(tfslim_resnet_mapping(trunk), shapes, state, source="tfslim", ignored=ignored)
