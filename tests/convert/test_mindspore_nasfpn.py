"""The MindSpore NAS-FPN port's checkpoint, converted, against the port's own outputs (fixture:
nasfpn_mindspore_ref, made by MindSpore 2.10 running the port's code; see its SOURCE.md)."""
import json
from collections import defaultdict

import numpy as np
import pytest
import torch
from _mindspore_files import ckpt_value
from _parts import read_listing

from scaledet.convert.mindspore_checkpoint import MindSporeCheckpointError, read_mindspore_checkpoint
from scaledet.convert.mindspore_nasfpn import (PORT_BOX_ORDER_TO_OURS, convert_mindspore_nasfpn,
                                               mindspore_nasfpn_checkpoint, network_params, port_model_args,
                                               port_state_dict)
from scaledet.models.heads.retina_head import flatten_level
from scaledet.registry import create_model

FIXTURE = "nasfpn_mindspore_ref"
TOLERANCE = 5e-4  # the acceptance bound; SOURCE.md: detections stable under 3e-5 noise


@pytest.fixture(scope="module")
def ref(shared_data):
    return shared_data / FIXTURE


@pytest.fixture(scope="module")
def converted(ref):
    """The converted fixture model and the port's outputs on the fixture's two inputs."""
    payload, model = convert_mindspore_nasfpn(ref / "nasfpn_narrow.ckpt", image_size=256)
    outputs = np.load(ref / "outputs.npz")
    with torch.no_grad():
        raw = model.eval()(torch.from_numpy(np.load(ref / "inputs.npy")))
    return payload, model, raw, outputs


def test_converted_fixture_gives_the_port_raw_outputs_on_every_level(converted):
    payload, _, raw, outputs = converted
    assert payload["model_args"] == {"num_classes": 20, "depth": 50, "width_multiplier": 0.125, "stem_width": 64,
                                     "num_stacks": 2, "width": 32, "head_width": 16, "head_convs": 4,
                                     "image_size": 256}
    differences = {}
    for level, (cls, box) in enumerate(zip(raw["cls_logits"], raw["box_deltas"]), start=3):
        ours_cls = flatten_level(cls, 21).numpy()
        ours_box = flatten_level(box, 4).numpy()[..., list(PORT_BOX_ORDER_TO_OURS)]  # back to (dy, dx, dh, dw)
        assert ours_cls.shape == outputs[f"cls_p{level}"].shape
        differences[f"cls_p{level}"] = float(np.abs(ours_cls - outputs[f"cls_p{level}"]).max())
        differences[f"loc_p{level}"] = float(np.abs(ours_box - outputs[f"loc_p{level}"]).max())
    print("max|ours - port| per level:", {k: f"{v:.2e}" for k, v in differences.items()})
    assert max(differences.values()) < TOLERANCE, differences


def _port_detections_by_group(dets):
    groups = defaultdict(list)
    for d in dets:
        x, y, w, h = d["bbox"]
        groups[d["image_id"], d["category_id"]].append((d["score"], x, y, x + w, y + h))
    return {k: sorted(v, reverse=True) for k, v in groups.items()}


def test_decoded_detections_equal_the_port_detections_as_sets(converted, ref):
    payload, model, raw, outputs = converted
    original = outputs["image_shape"].astype(int).tolist()
    with torch.no_grad():
        post = model.postprocess(raw, [(256, 256)] * 2, original_sizes=original)
    ours = []
    for i, (oh, ow) in enumerate(original):
        n = int(post["num_detections"][i])
        boxes = post["boxes"][i, :n] / torch.tensor([256 / ow, 256 / oh, 256 / ow, 256 / oh])
        for box, score, label in zip(boxes.tolist(), post["scores"][i, :n].tolist(), post["labels"][i, :n].tolist()):
            x0, y0, x1, y1 = box
            ours.append({"image_id": int(outputs["image_ids"][i]), "score": score,
                         "category_id": payload["label_to_category_id"][label], "bbox": [x0, y0, x1 - x0, y1 - y0]})
    port = json.loads((ref / "detections.json").read_text())
    assert len(ours) == len(port) == 1137
    mine, theirs = _port_detections_by_group(ours), _port_detections_by_group(port)
    assert mine.keys() == theirs.keys()
    for key in theirs:  # same members per (image, class): scores and boxes pair up in score order
        a, b = np.array(mine[key]), np.array(theirs[key])
        assert a.shape == b.shape, key
        np.testing.assert_allclose(a[:, 0], b[:, 0], atol=1e-5)
        np.testing.assert_allclose(a[:, 1:], b[:, 1:], atol=0.05)


def _listing(ref, name):
    return {row[0]: tuple(json.loads(row[2])) for row in read_listing(ref / name)}


def _meta_params(shapes):
    return {name[len("network."):] if name.startswith("network.") else name: torch.empty(shape, device="meta")
            for name, shape in shapes.items()}


def test_full_size_parameter_list_maps_with_nothing_left_over(ref):
    shapes = _listing(ref, "full_size_params_eval.tsv")
    params = _meta_params(shapes)
    args = port_model_args(ref, params)
    assert args == {"num_classes": 80, "depth": 50, "width_multiplier": 1.0, "stem_width": 64, "num_stacks": 7,
                    "width": 256, "head_width": 256, "head_convs": 4}
    with torch.device("meta"):
        model = create_model("retinanet_nasfpn_r50_port", **args)
    state = port_state_dict(ref, params, model)  # raises on anything unmapped either way
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == len(shapes) == 585
    # exactly the port's count: its trainable values (BN moving statistics are buffers here)
    trainable = sum(int(np.prod(s)) for n, s in shapes.items() if not n.endswith(("moving_mean", "moving_variance")))
    assert sum(p.numel() for p in model.parameters()) == trainable == 85_891_392


def test_full_size_count_against_the_published_figure():
    """85,891,392 less what the port adds to the published shared-head, 80-class 60.3M model."""
    with torch.device("meta"):
        model = create_model("retinanet_nasfpn_r50_port")
    total = sum(p.numel() for p in model.parameters())
    conv3x3 = 256 * 256 * 9
    unshared_towers = 2 * 4 * (4 * conv3x3)            # 4 more copies of both 4-conv towers
    unshared_predictors = 4 * 256 * 9 * (9 * 80 + 9 * 4)  # 4 more copies of both predictors
    background_channel = 5 * 9 * 256 * 9                # the 81st channel of each level's predictor
    assert (unshared_towers, unshared_predictors, background_channel) == (18_874_368, 6_967_296, 103_680)
    shared_form = total - unshared_towers - unshared_predictors - background_channel
    assert shared_form == 59_946_048
    assert abs(shared_form / 60.3e6 - 1) < 0.01  # -0.59%
    # against our own count of the published form: the port's P6/P7 1x1 conv + BN, less the
    # published form's conv biases (neck 7 x 7 x 256, laterals 3 x 256, head 8 x 256 + 9 x 80 + 36)
    # and its per-level head BN (2 x 4 x 5 x 512)
    with torch.device("meta"):
        published_form = create_model("retinanet_nasfpn_r50", num_classes=80)
    biases_and_head_bn = 7 * 7 * 256 + 3 * 256 + 8 * 256 + 9 * 80 + 36 + 2 * 4 * 5 * 512
    assert shared_form - sum(p.numel() for p in published_form.parameters()) == \
        2 * (256 * 256 + 2 * 256) - biases_and_head_bn


def test_training_checkpoint_maps_once_its_optimizer_state_is_dropped(ref):
    """train.py's checkpoint: the 585 network tensors plus Momentum accumulators, lr, momentum, step."""
    train = {name: torch.empty(shape, device="meta") for name, shape in
             _listing(ref, "full_size_params_train_ckpt.tsv").items()}
    assert len(train) == 959
    network = network_params(ref, train)
    assert sorted(network) == sorted(_meta_params(_listing(ref, "full_size_params_eval.tsv")))
    with torch.device("meta"):
        model = create_model("retinanet_nasfpn_r50_port", **port_model_args(ref, network))
    port_state_dict(ref, network, model)  # raises on anything unmapped


def _one_line(err, path):
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_bad_checkpoints_fail_in_one_line_and_write_nothing(ref, tmp_path):
    raw = (ref / "nasfpn_narrow.ckpt").read_bytes()
    output = tmp_path / "out.pt"
    cases = {
        "truncated.ckpt": (raw[: len(raw) * 2 // 3], "truncated checkpoint"),
        "resnet_only.ckpt": (ckpt_value("network.backbone.conv1.weight", "Float32", [64, 3, 7, 7], bytes(64 * 147 * 4))
                             + ckpt_value("network.fc.weight", "Float32", [10, 64], bytes(640 * 4)),
                             "not a MindSpore NAS-FPN port checkpoint"),
        "extra.ckpt": (raw + ckpt_value("network.head.extra.weight", "Float32", [2], bytes(8)),
                       "1 left over (head.extra.weight)"),
    }
    for name, (data, expected) in cases.items():
        source = tmp_path / name
        source.write_bytes(data)
        with pytest.raises(MindSporeCheckpointError) as err:
            mindspore_nasfpn_checkpoint(source, output, image_size=256)
        assert expected in _one_line(err, source)
        assert list(tmp_path.glob("out.pt*")) == [] and list(tmp_path.glob(".out.pt*")) == []


def test_missing_tensor_is_listed(ref, tmp_path):
    params = read_mindspore_checkpoint(ref / "nasfpn_narrow.ckpt")
    dropped = "network.head.multi_cls_layers.4.feats.8.weight"  # the P7 class predictor
    source = tmp_path / "short.ckpt"
    source.write_bytes(b"".join(ckpt_value(name, "Float32", list(t.shape), t.numpy().tobytes())
                                for name, t in params.items() if name != dropped))
    with pytest.raises(MindSporeCheckpointError) as err:
        convert_mindspore_nasfpn(source, image_size=256)
    assert "1 scaledet tensors unfilled (head.cls_towers.4.8.weight)" in _one_line(err, source)
