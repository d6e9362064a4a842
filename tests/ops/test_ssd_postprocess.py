import pytest
import torch

from scaledet.ops.box_coder import BoxCoder
from scaledet.ops.ssd_postprocess import SSDPostProcessor, decode_shift_inside


def logits_for(probabilities: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probabilities).clamp(min=1e-9).log()


def test_overlapping_boxes_of_one_class_keep_one_and_labels_are_zero_based():
    anchors = torch.tensor([[0.10, 0.10, 0.50, 0.50],
                            [0.12, 0.10, 0.52, 0.50],   # IoU with box 0 ~0.9 -> suppressed
                            [0.60, 0.60, 0.90, 0.90]])
    conf = logits_for([[0.1, 0.0, 0.9, 0.0], [0.2, 0.0, 0.8, 0.0], [0.3, 0.0, 0.0, 0.7]])[None]
    post = SSDPostProcessor(max_detections=5)
    out = post(torch.zeros(1, 3, 4), conf, anchors, (100, 200))
    assert out["num_detections"].tolist() == [2]
    assert out["labels"][0].tolist() == [1, 2, -1, -1, -1]  # internal classes 2 and 3
    assert out["scores"][0, :2].tolist() == pytest.approx([0.9, 0.7])
    scale = torch.tensor([200.0, 100.0, 200.0, 100.0])
    assert torch.allclose(out["boxes"][0, 0], anchors[0] * scale, atol=1e-4)
    assert torch.allclose(out["boxes"][0, 1], anchors[2] * scale, atol=1e-4)
    assert (out["boxes"][0, 2:] == 0).all() and (out["scores"][0, 2:] == 0).all()


def test_batch_is_processed_together_with_per_image_results():
    anchors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    conf = torch.stack([logits_for([[0.5, 0.5], [0.995, 0.005]]),   # second box under 0.01
                        logits_for([[0.2, 0.8], [0.4, 0.6]])])
    out = SSDPostProcessor(max_detections=3)(torch.zeros(2, 2, 4), conf, anchors, (10, 10))
    assert out["num_detections"].tolist() == [1, 2]
    assert out["labels"].tolist() == [[0, -1, -1], [0, 0, -1]]
    assert out["scores"][1, :2].tolist() == pytest.approx([0.8, 0.6])
    assert out["boxes"].shape == (2, 3, 4)


def test_same_box_in_two_classes_is_not_suppressed_and_caps_apply():
    anchors = torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.5, 0.1, 0.7, 0.3], [0.1, 0.5, 0.3, 0.7]])
    conf = logits_for([[0.2, 0.4, 0.4]] * 3)[None]
    out = SSDPostProcessor(max_detections=10)(torch.zeros(1, 3, 4), conf, anchors, (1, 1))
    assert out["num_detections"].tolist() == [6]  # 3 boxes x 2 classes
    capped = SSDPostProcessor(max_detections=10, max_per_class=2)(torch.zeros(1, 3, 4), conf, anchors, (1, 1))
    assert capped["num_detections"].tolist() == [4]
    assert sorted(capped["labels"][0, :4].tolist()) == [0, 0, 1, 1]
    top = SSDPostProcessor(max_detections=10, pre_nms_topk=1)(torch.zeros(1, 3, 4), conf, anchors, (1, 1))
    assert top["num_detections"].tolist() == [2]
    few = SSDPostProcessor(max_detections=3)(torch.zeros(1, 3, 4), conf, anchors, (1, 1))
    assert few["num_detections"].tolist() == [3] and (few["labels"] >= 0).all()


def test_decode_shifts_boxes_inside_instead_of_cutting():
    anchors = torch.tensor([[-0.1, 0.2, 0.3, 0.6]])
    boxes = decode_shift_inside(BoxCoder((10, 10, 5, 5)), torch.zeros(1, 4), anchors)
    assert torch.allclose(boxes, torch.tensor([[0.0, 0.2, 0.4, 0.6]]))
    wide = decode_shift_inside(BoxCoder((10, 10, 5, 5)), torch.zeros(1, 4), torch.tensor([[0.7, 0.0, 1.2, 0.5]]))
    assert torch.allclose(wide, torch.tensor([[0.7, 0.0, 1.0, 0.5]]))


def test_segmentation_mask_is_upsampled_argmax_at_input_size():
    seg = torch.zeros(2, 3, 2, 2)
    seg[0, 2, 0, 0] = 5.0
    seg[1, 1] = 5.0
    anchors = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    out = SSDPostProcessor()(torch.zeros(2, 1, 4), torch.zeros(2, 1, 3), anchors, (8, 6), seg=seg)
    assert out["mask"].shape == (2, 8, 6) and out["mask"].dtype == torch.long
    assert out["mask"][0, 0, 0] == 2 and out["mask"][0, -1, -1] == 0
    assert (out["mask"][1] == 1).all()
