"""``scaledet export`` + ``scaledet predict --backend onnxruntime``: same detections.json as the
PyTorch path; bad options are refused with one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scaledet.cli.main import main
from scaledet.engine.checkpoint import FORMAT, load_checkpoint, save_atomic
from scaledet.registry import create_model

MODEL_ARGS = dict(num_classes=3, head_width=32, endpoints_num_filters=32, score_threshold=0.2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random tiny SpineNet-RetinaNet whose head is scaled to give many distinct detections."""
    torch.manual_seed(0)
    model = create_model("retinanet_spinenet49_tiny", **MODEL_ARGS).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 128))
        cls_std = torch.cat([t.flatten() for t in out["cls_logits"]]).std()
        box_std = torch.cat([t.flatten() for t in out["box_deltas"]]).std()
        model.head.cls_tower.predictor.weight.mul_(1.5 / cls_std)
        model.head.box_tower.predictor.weight.mul_(0.5 / box_std)
        model.head.cls_tower.predictor.bias.fill_(-2.0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_atomic({"format": FORMAT, "model_name": "retinanet_spinenet49_tiny", "model_args": MODEL_ARGS,
                 "model": model.state_dict(), "ema": None, "class_names": ["red", "green", "blue"]}, path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):  # square images: the torch path then runs at exactly the exported 128x128
        pixels = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
        pixels[20:60, 30:70] = (200, 40 * i, 90)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _detections(path: Path) -> dict[str, list[dict]]:
    return {Path(r["image"]).name: r["detections"] for r in json.loads(path.read_text())}


def test_onnxruntime_predict_matches_torch_predict(capsys, tmp_path, checkpoint, images):
    onnx_path = tmp_path / "m.onnx"
    code, out, err = _run(capsys, "export", "--checkpoint", checkpoint, "--output", onnx_path, "--image-size", 128,
                          "--batch-size", 2)
    assert code == 0, err
    assert "checked against PyTorch" in out and onnx_path.is_file()
    common = ["--score-threshold", "0.3", "--batch-size", "2", "--image-size", "128"]
    assert _run(capsys, "predict", "--checkpoint", checkpoint, images, "--output", tmp_path / "d0", "--device", "cpu",
               *common)[0] == 0
    code, _, err = _run(capsys, "predict", "--backend", "onnxruntime", "--model", onnx_path, images,
                        "--output", tmp_path / "d1", *common)
    assert code == 0, err
    torch_dets, onnx_dets = _detections(tmp_path / "d0" / "detections.json"), _detections(
        tmp_path / "d1" / "detections.json")
    assert sorted(torch_dets) == sorted(onnx_dets) == ["img0.png", "img1.png", "img2.png"]
    assert sum(len(d) for d in torch_dets.values()) >= 10
    for name, expected in torch_dets.items():
        actual = onnx_dets[name]
        assert len(actual) == len(expected)
        key = lambda d: (-d["score"], d["label"], d["box_xyxy"])  # noqa: E731
        for e, a in zip(sorted(expected, key=key), sorted(actual, key=key)):
            assert e["label"] == a["label"] and e["class_name"] == a["class_name"]
            assert a["score"] == pytest.approx(e["score"], abs=2e-4)
            assert a["box_xyxy"] == pytest.approx(e["box_xyxy"], abs=0.02)  # JSON rounds to 0.01 px
        assert (tmp_path / "d1" / name).with_suffix(".png").is_file()


def test_export_from_registered_name_with_dynamic_batch(capsys, tmp_path):
    code, out, err = _run(capsys, "export", "--model", "retinanet_spinenet49_tiny", "--num-classes", 2,
                          "--output", tmp_path / "t.onnx", "--image-size", 128, "--dynamic-batch", "--opset", 18)
    assert code == 0, err
    assert "dynamic batch" in out


@pytest.mark.parametrize("args, message", [
    (["--image-size", "200"], "not a multiple of retinanet_spinenet49_tiny's size divisor 128; use 128 or 256"),
    (["--opset", "7"], "opset 7 is not supported"),
    (["--batch-size", "0"], "batch size must be at least 1"),
    (["--int8"], "--int8 and --calibration DIR_OR_CONFIG go together"),
    (["--int8", "--calibration", "no/such/folder"], "no/such/folder: --calibration needs a folder of images or a config"),
    (["--int8", "--calibration", ".", "--dynamic-batch"], "--int8 exports a fixed batch"),
])
def test_bad_options_give_one_line_errors(capsys, tmp_path, checkpoint, args, message):
    code, out, err = _run(capsys, "export", "--checkpoint", checkpoint, "--output", tmp_path / "bad.onnx", *args)
    assert code == 1
    assert err.strip().count("\n") == 0 and message in err and err.startswith("scaledet export: error:")
    assert not (tmp_path / "bad.onnx").exists()


def test_predict_refuses_a_size_the_file_was_not_exported_for(capsys, tmp_path, images):
    onnx_path = tmp_path / "t.onnx"
    assert _run(capsys, "export", "--model", "retinanet_spinenet49_tiny", "--output", onnx_path,
                "--image-size", 128, "--no-verify")[0] == 0
    code, _, err = _run(capsys, "predict", "--backend", "onnxruntime", "--model", onnx_path, images,
                        "--output", tmp_path / "d", "--image-size", 256)
    assert code == 1 and "exported for 128 px inputs, not 256" in err


def test_not_a_scaledet_onnx_file(capsys, tmp_path, images):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "plain.onnx")
    code, _, err = _run(capsys, "predict", "--backend", "onnxruntime", "--model", tmp_path / "plain.onnx", images,
                        "--output", tmp_path / "d")
    assert code == 1 and "not a scaledet export" in err and "plain.onnx" in err


def test_help_shows_a_worked_example(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert "scaledet export --checkpoint" in out and "--dynamic-batch" in out


def test_int8_export_keeps_nms_and_records_its_calibration(capsys, tmp_path, checkpoint, images):
    """--int8 with a folder of calibration images: a QDQ graph with NonMaxSuppression still in
    it, the scaledet metadata plus what the quantiser did, and detections through OnnxPredictor."""
    import onnx

    from scaledet.export.onnx import read_metadata
    from scaledet.export.onnx_predictor import OnnxPredictor

    path = tmp_path / "int8.onnx"
    code, out, err = _run(capsys, "export", "--checkpoint", checkpoint, "--output", path, "--image-size", 128,
                          "--int8", "--calibration", images, "--calibration-images", 3, "--int8-max-fallback", 0)
    assert code == 0, err
    assert "int8 QDQ" in out and "groups kept fp32: none" in out
    proto = onnx.load(str(path))

    def op_types(graph) -> set[str]:  # NMS sits in an If branch (taken when there are boxes)
        return {n.op_type for n in graph.node} | {op for n in graph.node for a in n.attribute
                                                  if a.type == onnx.AttributeProto.GRAPH for op in op_types(a.g)}

    assert {"QuantizeLinear", "DequantizeLinear", "NonMaxSuppression"} <= op_types(proto.graph)
    meta = read_metadata(proto)
    assert meta["image_size"] == 128 and meta["num_classes"] == 3
    report = meta["int8"]
    assert report["calibration_images"] == 3 and report["calibration_source"] == str(images)
    assert report["quantized_nodes"] > 100 and report["fp32_groups"] == [] and report["output_error"] >= 0
    quantized_convs = {n.name for n in proto.graph.node if n.op_type == "Conv"
                       and any(i.endswith("_DequantizeLinear_Output") for i in n.input)}
    assert len(quantized_convs) > 30
    detections = OnnxPredictor(path).predict(sorted(images.iterdir()))
    assert len(detections) == 3 and all(len(d["scores"]) > 0 for d in detections)


def test_onnx_file_evaluates_like_its_checkpoint(capsys, tmp_path, trained_run):
    """evaluate_onnx_coco runs an export through the project's own evaluation loop: the fp32
    file's COCO metrics equal the checkpoint's."""
    from scaledet.config import load_config
    from scaledet.engine.evaluate import evaluate_checkpoint
    from scaledet.export.onnx_eval import evaluate_onnx_coco

    # After two steps every score is the prior (0.01), so which detections fill the 100 slots
    # would turn on float rounding; random class-predictor weights spread the scores apart.
    state = load_checkpoint(trained_run["checkpoint"])
    generator = torch.Generator().manual_seed(0)
    for weights in (state["model"], state.get("ema") or {}):
        for name, value in weights.items():
            if name.startswith("head.cls_tower.predictor."):
                weights[name] = value + torch.randn(value.shape, generator=generator)
    checkpoint = save_atomic(state, tmp_path / "spread.pt")
    path = tmp_path / "fp32.onnx"
    assert _run(capsys, "export", "--checkpoint", checkpoint, "--output", path, "--image-size", 128)[0] == 0
    onnx_stats = evaluate_onnx_coco(path, trained_run["config"])
    torch_stats = evaluate_checkpoint(load_config(trained_run["config"]), checkpoint,
                                      device=torch.device("cpu"), output=tmp_path, progress=False).metrics
    assert set(onnx_stats) == set(torch_stats) and torch_stats["AR100"] > 0
    for key in ("AP", "AP50", "AR100"):
        assert onnx_stats[key] == pytest.approx(torch_stats[key], abs=2e-3), key
