"""The export check says honestly why two outputs differ (matching, not slot by slot)."""
import numpy as np

from scaledet.export.onnx import compare_detections


def _dets(boxes, scores, labels):
    return {"boxes": np.asarray([boxes], dtype=np.float32), "scores": np.asarray([scores], dtype=np.float32),
            "labels": np.asarray([labels]), "num_detections": np.asarray([len(scores)])}


def test_same_detections_in_another_order_match():
    a = _dets([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.9], [1, 2])
    b = _dets([[5, 5, 20, 20], [0, 0, 10, 10]], [0.9, 0.9], [2, 1])
    assert compare_detections(a, b) is None


def test_a_duplicated_detection_is_named_as_such_not_as_a_zero_offset():
    torch_out = _dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.8, 0.8], [1, 1])
    onnx_out = _dets([[0, 0, 10, 10], [30, 30, 40, 40]], [0.8, 0.5], [1, 1])
    problem = compare_detections(torch_out, onnx_out)
    assert "PyTorch detection 1" in problem and "already matched another PyTorch detection" in problem
    assert "off by 0.00e+00" not in problem


def test_a_moved_box_reports_the_failing_test_with_its_tolerance():
    problem = compare_detections(_dets([[0, 0, 10, 10]], [0.8], [1]), _dets([[0, 0, 10, 10.5]], [0.8], [1]))
    assert problem.endswith("box off by 5.00e-01 px (allowed 2.00e-03)")
