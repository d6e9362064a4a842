"""ONNX export: ORT matches PyTorch for each family at two sizes x two batch sizes, metadata is
complete, and options the graph cannot honour are refused."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from scaledet.export.onnx import (
    ExportError,
    compare_detections,
    example_inputs,
    export_onnx,
    ort_session,
    read_metadata,
    run_onnx,
    torch_reference,
    verify_export,
)
from scaledet.models.detectors.base import Detector


def _op_types(graph: onnx.GraphProto) -> set[str]:
    """Op types of a graph and its subgraphs (NMS sits inside an ``If`` for the empty case)."""
    types = set()
    for node in graph.node:
        types.add(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                types |= _op_types(attr.g)
    return types


def _session(path):
    return ort_session(path)


@pytest.mark.parametrize("family", ["spinenet", "nasfpn", "blitznet"])
def test_onnxruntime_matches_pytorch(family, family_model, export_sizes, tmp_path):
    model = family_model(family)
    for size in export_sizes[family]:
        # export_onnx's own ORT check is skipped: this test makes the same comparison itself
        path = export_onnx(model, tmp_path / f"{size}.onnx", image_size=size, dynamic_batch=True, verify=False)
        session = _session(path)
        for batch in (1, 2):
            images, sizes = example_inputs(size, batch, seed=100 + batch)
            if batch == 2:  # the second image's valid region is smaller: clipping must agree too
                sizes[1] = torch.tensor([size, size * 3 // 4])
                images[1, :, :, size * 3 // 4:] = 0
            expected = torch_reference(model, images, sizes)
            actual = run_onnx(session, images, sizes)
            assert expected["num_detections"].min() >= 5, "the comparison needs real detections"
            assert compare_detections(expected, actual) is None, (family, size, batch)
            if "mask" in expected:
                assert actual["mask"].shape == (batch, size, size)
                assert (expected["mask"] == actual["mask"]).mean() >= 0.999


def test_metadata_and_fixed_shape(family_model, tmp_path):
    model = family_model("spinenet")
    path = export_onnx(model, tmp_path / "m.onnx", image_size=128, batch_size=2, opset=13)
    proto = onnx.load(str(path))
    meta = read_metadata(proto)
    assert meta["model_name"] == "retinanet_spinenet49_tiny"
    assert meta["class_names"] == ["cat", "dog", "car", "tree"]
    assert meta["image_size"] == 128 and meta["size_divisor"] == 128 and meta["batch_size"] == 2
    assert meta["pixel_mean"] == pytest.approx(list(model.pixel_mean))
    assert meta["pixel_std"] == pytest.approx(list(model.pixel_std))
    assert meta["resize_mode"] == "long_side" and meta["fused_batch_norm"] is True
    assert proto.opset_import[0].version == 13
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    assert "NonMaxSuppression" in _op_types(proto.graph)
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert inputs == {"images": [2, 3, 128, 128], "image_sizes": [2, 2]}
    assert json.loads(next(p.value for p in proto.metadata_props if p.key == "scaledet.num_classes")) == 4


def test_verification_catches_a_different_model(family_model, tmp_path):
    model = family_model("spinenet")
    path = export_onnx(model, tmp_path / "m.onnx", image_size=128, verify=False)
    other = family_model("spinenet").__class__  # same architecture, perturbed weights below
    import copy

    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.head.box_tower.predictor.bias.add_(0.05)
    assert isinstance(changed, other)
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        verify_export(path, changed, 128, [1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=200), "not a multiple of .* size divisor 128"),
    (dict(image_size=128, opset=9), "opset 9 is not supported"),
    (dict(image_size=128, opset=99), "opset 99 is not supported"),
    (dict(image_size=128, batch_size=0), "batch size must be at least 1"),
])
def test_refuses_options_it_cannot_honour(family_model, tmp_path, kwargs, message):
    with pytest.raises(ExportError, match=message):
        export_onnx(family_model("spinenet"), tmp_path / "bad.onnx", **kwargs)
    assert not (tmp_path / "bad.onnx").exists()


class _BatchBakedDetector(Detector):
    """Post-processing with a Python loop over the batch: tracing unrolls it, so the exported
    graph only works at the traced batch size."""

    size_divisor = 32
    num_classes = 1

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images):
        return {"boxes": self.conv(images).mean(dim=(2, 3))}

    def postprocess(self, outputs, image_sizes):
        rows = [outputs["boxes"][i] for i in range(outputs["boxes"].shape[0])]
        boxes = torch.stack(rows)[:, None, :].abs() * image_sizes[:, None, :1]
        batch = boxes.shape[0]
        return {"boxes": boxes, "scores": torch.ones(batch, 1), "labels": torch.zeros(batch, 1, dtype=torch.long),
                "num_detections": torch.ones(batch, dtype=torch.long)}


def test_refuses_dynamic_batch_the_graph_cannot_serve(tmp_path):
    torch.manual_seed(0)
    model = _BatchBakedDetector().eval()
    export_onnx(model, tmp_path / "fixed.onnx", image_size=64)  # fixed batch: fine
    with pytest.raises(ExportError, match="cannot be exported with a dynamic batch"):
        export_onnx(model, tmp_path / "dynamic.onnx", image_size=64, dynamic_batch=True)
    assert not (tmp_path / "dynamic.onnx").exists()


def test_compare_detections_tolerates_only_float_ties():
    base = {"boxes": np.array([[[0, 0, 10, 10], [5, 5, 20, 20]]], np.float32),
            "scores": np.array([[0.9, 0.9]], np.float32), "labels": np.array([[1, 1]]),
            "num_detections": np.array([2])}
    swapped = {k: v[:, ::-1].copy() if v.ndim > 1 else v for k, v in base.items()}
    assert compare_detections(base, swapped) is None
    moved = {**base, "boxes": base["boxes"] + np.float32(0.01)}
    assert "no counterpart" in compare_detections(base, moved)
    fewer = {**base, "num_detections": np.array([1])}
    assert "2 detections in PyTorch, 1 in ONNX Runtime" in compare_detections(base, fewer)
