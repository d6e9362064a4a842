"""retinanet_nasfpn_r50_port's parts: stem width, bias-free NAS-FPN, per-level head, background
channel in the loss, the port's detection rule against a plain per-class loop, its init."""
import numpy as np
import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

import scaledet
from scaledet.models.backbones.resnet import resnet
from scaledet.models.necks.nasfpn import NASFPN
from scaledet.ops.box_coder import BoxCoder
from scaledet.ops.port_postprocess import PortPostProcessor

NARROW = dict(width_multiplier=0.0625, width=8, num_stacks=1, head_width=8)


def test_stem_width_is_kept_while_the_stages_narrow():
    backbone = resnet(50, frozen_bn=False, width_multiplier=0.125, stem_width=64)
    assert backbone.conv1.weight.shape == (64, 3, 7, 7)
    assert backbone.layer1[0].conv1.weight.shape == (8, 64, 1, 1)  # the port's narrow fixture layout
    assert [f.channels for f in backbone.feature_info] == [64, 128, 256]
    assert resnet(50, frozen_bn=False, width_multiplier=0.125).conv1.weight.shape[0] == 8  # Model Garden's


def test_nasfpn_without_conv_biases():
    backbone = resnet(50, frozen_bn=False, width_multiplier=0.0625)
    with_bias = NASFPN(backbone.feature_info, 8, 1, extra_levels="conv_pool")
    without = NASFPN(backbone.feature_info, 8, 1, extra_levels="conv_pool", conv_bias=False)
    convs = [m for m in without.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.bias is None for m in convs)
    assert sum(p.numel() for p in with_bias.parameters()) - sum(p.numel() for p in without.parameters()) == \
        8 * len(convs)


def test_port_model_layout_and_init():
    torch.manual_seed(0)
    model = scaledet.create_model("retinanet_nasfpn_r50_port", num_classes=3, **NARROW)
    head = model.head
    assert len(head.cls_towers) == len(head.box_towers) == 5 and head.cls_towers[0] is not head.cls_towers[1]
    assert head.cls_towers[0][8].weight.shape == (9 * 4, 8, 3, 3)  # 9 anchors x (background + 3 classes)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.bias is None for m in convs)
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.abs().max() <= 0.02 and weights.std().item() == pytest.approx(0.0088, rel=0.1)  # N(0,.01) cut at 2σ
    bottleneck = model.backbone.layer1[0]
    assert torch.all(bottleneck.bn3.weight == 0) and bottleneck.bn1.eps == 1e-3
    assert bottleneck.bn1.momentum == pytest.approx(0.003) and model.neck.projections[0][1].eps == 1e-5
    assert model.anchor_generator.num_anchors(640, 640) == 76_725


def test_loss_trains_the_background_channel_on_negatives():
    torch.manual_seed(0)
    model = scaledet.create_model("retinanet_nasfpn_r50_port", num_classes=3, image_size=128, **NARROW)
    outputs = model(torch.randn(2, 3, 128, 128))  # batch 2: P7 is 1 x 1 and trains its BN
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.tensor([[30.0, 5.0, 120.0, 50.0]]), "labels": torch.tensor([0])}]
    losses = model.loss(outputs, targets)
    cls, _, anchors = model.flat_outputs(outputs)
    logits = torch.cat(cls, 1)
    matches = model.criterion.assign(torch.cat(anchors), targets)
    dense = torch.zeros_like(logits)
    dense[..., 0] = (matches < 0).float()  # background channel: every negative anchor
    for i, target in enumerate(targets):
        dense[i, matches[i] >= 0, int(target["labels"][0]) + 1] = 1.0  # class k is channel k + 1
    expected = sigmoid_focal_loss(logits, dense, alpha=0.75, gamma=2.0, reduction="sum") / (losses["num_positives"] + 1)
    torch.testing.assert_close(losses["cls_loss"], expected, rtol=1e-4, atol=1e-4)
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def _port_nms_loop(boxes, scores, grow, iou, per_class, threshold):
    """The port's rule in plain numpy: per class, score > threshold, greedy NMS on +grow areas."""
    kept = []
    for c in range(scores.shape[1]):
        idx = np.nonzero(scores[:, c] > threshold)[0]
        order = idx[np.argsort(-scores[idx, c], kind="stable")]
        picked = []
        while order.size and len(picked) < per_class:
            i, order = order[0], order[1:]
            picked.append(i)
            x0 = np.maximum(boxes[i, 0], boxes[order, 0])
            y0 = np.maximum(boxes[i, 1], boxes[order, 1])
            x1 = np.minimum(boxes[i, 2], boxes[order, 2])
            y1 = np.minimum(boxes[i, 3], boxes[order, 3])
            inter = np.maximum(0, x1 - x0 + grow[0]) * np.maximum(0, y1 - y0 + grow[1])
            area = lambda b: (b[..., 2] - b[..., 0] + grow[0]) * (b[..., 3] - b[..., 1] + grow[1])  # noqa: E731
            order = order[inter / (area(boxes[i]) + area(boxes[order]) - inter) <= iou]
        kept += [(c, float(scores[i, c])) for i in picked]
    return sorted(kept)


def test_port_postprocessor_equals_a_per_class_loop():
    torch.manual_seed(1)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0), size_clip=float("inf"))
    post = PortPostProcessor(coder, 3, score_threshold=0.1, nms_iou=0.6, per_class=5)
    anchors = torch.rand(400, 2) * 100
    anchors = torch.cat([anchors, anchors + 10 + torch.rand(400, 2) * 30], 1)
    logits = torch.randn(2, 400, 3) - 1.0
    deltas = torch.randn(2, 400, 4) * 0.5
    sizes = torch.tensor([[128, 128], [128, 128]])
    original = torch.tensor([[300, 500], [640, 428]])
    out = post([logits], [deltas], [anchors], sizes, original)
    assert out["boxes"].shape == (2, 15, 4) and out["labels"].shape == (2, 15)
    for i in range(2):
        boxes = coder.decode(deltas[i], anchors).clamp(0, 128).numpy()
        scale = (128 / original[i, 1].item(), 128 / original[i, 0].item())
        expected = _port_nms_loop(boxes, torch.sigmoid(logits[i]).numpy(), scale, 0.6, 5, 0.1)
        n = int(out["num_detections"][i])
        got = sorted(zip(out["labels"][i, :n].tolist(), out["scores"][i, :n].tolist()))
        assert len(got) == len(expected) == 15  # 5 per class: the cap is per class, not per image
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-6)
        assert [c for c, _ in got] == [c for c, _ in expected]
        assert torch.all(out["scores"][i, :n][:-1] >= out["scores"][i, :n][1:])  # best first
