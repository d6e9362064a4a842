"""int8 quantisation pieces: calibration sources, node groups, and (slow) the sensitivity pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scaledet.export.quantize import QuantizationError, calibration_items, group_of


def _images(folder, n: int):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((64, 80, 3)) * 255).astype(np.uint8)).save(folder / f"im{i:02d}.png")
    return folder


def test_calibration_from_a_folder_is_spread_over_it(tmp_path):
    folder = _images(tmp_path / "imgs", 10)
    (folder / "notes.txt").write_text("not an image")
    items = calibration_items(folder, 4)
    assert [p.name for p in items] == ["im00.png", "im03.png", "im06.png", "im09.png"]
    assert len(calibration_items(folder, 50)) == 10


def test_calibration_from_a_config_reads_its_training_images(tmp_path):
    from scaledet.config import load_config, save_config

    cfg = load_config(None, [f"data.root={tmp_path / 'data'}", "data.synthetic_train=6", "data.synthetic_val=2",
                             "data.synthetic_image_size=64"])
    save_config(cfg, tmp_path / "cfg.yaml")
    items = calibration_items(tmp_path / "cfg.yaml", 3)
    assert len(items) == 3
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.shape == (3, 64, 64) for t in items)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "needs a folder of images or a config"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no images"),
    (lambda p: (p / "m.onnx").write_text("x") and p / "m.onnx", "needs a folder of images or a config"),
])
def test_bad_calibration_sources_are_refused(tmp_path, make, message):
    with pytest.raises(QuantizationError, match=message):
        calibration_items(make(tmp_path), 4)


def test_groups_are_blocks_and_levels_of_a_predictor_share_one():
    assert group_of("/model/backbone/blocks.3/resamples.0/layers/layers.0/layers.0.0/Conv", False) == \
        "backbone/blocks.3"
    assert group_of("/model/head/cls_tower/levels.2.1/Conv", False) == "head/cls_tower"
    assert group_of("/model/head/box_tower/predictor_3/Conv", True) == "head/box_tower/predictor"
    assert group_of("/model/head/box_tower/predictor/Conv", True) == "head/box_tower/predictor"


@pytest.mark.slow
def test_sensitivity_pass_keeps_the_most_sensitive_group_in_fp32(tmp_path, family_model):
    """With a tolerance no int8 model meets, every group is measured alone and the worst is
    kept fp32: its convolutions keep float weights, and the metadata says so."""
    import onnx

    from scaledet.export.onnx import read_metadata
    from scaledet.export.quantize import export_int8

    model = family_model("spinenet")
    path, report = export_int8(model, tmp_path / "int8.onnx", image_size=128, calibration=_images(tmp_path / "c", 4),
                               num_calibration=4, num_probe=2, tolerance=0.0, max_fallback=1, threads=1)
    worst = max(report.group_error, key=report.group_error.get)
    assert report.groups == len(report.group_error) > 10
    assert report.fp32_groups == [worst] and report.within_tolerance is False
    assert [t["fp32_groups"] for t in report.fallback_trials] == [[], [worst]]
    proto = onnx.load(str(path))
    floats = {t.name for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    kept = [n for n in proto.graph.node if n.name in set(report.fp32_nodes) and n.op_type == "Conv"]
    assert kept and all(n.input[1] in floats for n in kept)
    others = [n for n in proto.graph.node if n.op_type == "Conv" and n.name not in set(report.fp32_nodes)]
    assert others and all(n.input[1].endswith("_DequantizeLinear_Output") for n in others)
    assert read_metadata(proto)["int8"]["fp32_groups"] == [worst]
