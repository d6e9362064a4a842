import torch
from torchvision.ops import batched_nms

from scaledet.ops.box_coder import BoxCoder
from scaledet.ops.postprocess import SigmoidPostProcessor


def _reference(cls, box, anchors, sizes, post):
    """Straightforward per-image loop, as torchvision's RetinaNet post-processing."""
    out = []
    for i in range(cls[0].shape[0]):
        boxes_all, scores_all, labels_all = [], [], []
        for logits, deltas, anc in zip(cls, box, anchors):
            scores = torch.sigmoid(logits[i]).flatten()
            keep = scores > post.score_threshold
            scores, idx = scores[keep], torch.nonzero(keep).squeeze(1)
            k = min(post.pre_nms_topk, idx.numel())
            scores, order = scores.topk(k)
            idx = idx[order]
            a, c = idx // logits.shape[-1], idx % logits.shape[-1]
            b = post.box_coder.decode(deltas[i][a], anc[a])
            h, w = sizes[i].tolist()
            b[:, 0::2] = b[:, 0::2].clamp(0, w)
            b[:, 1::2] = b[:, 1::2].clamp(0, h)
            area = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])  # unlike torchvision, collapsed boxes are dropped
            b, scores, c = b[area], scores[area], c[area]
            boxes_all.append(b), scores_all.append(scores), labels_all.append(c)
        b, s, c = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
        keep = batched_nms(b, s, c, post.nms_iou)[: post.max_detections]
        out.append((b[keep], s[keep], c[keep]))
    return out


def test_vectorised_matches_per_image_reference():
    g = torch.Generator().manual_seed(0)
    num_classes, batch = 4, 3
    sizes_hw = [(8, 8), (4, 4)]
    anchors = [torch.rand(h * w * 2, 2, generator=g).mul(100).repeat(1, 2) + torch.tensor([0, 0, 20.0, 30.0])
               for h, w in sizes_hw]
    cls = [torch.randn(batch, a.shape[0], num_classes, generator=g) * 2 for a in anchors]
    box = [torch.randn(batch, a.shape[0], 4, generator=g) * 0.2 for a in anchors]
    image_sizes = torch.tensor([[120, 130], [64, 100], [128, 128]])
    post = SigmoidPostProcessor(BoxCoder(), score_threshold=0.3, pre_nms_topk=50, nms_iou=0.5, max_detections=20)
    out = post(cls, box, anchors, image_sizes)
    assert out["boxes"].shape == (batch, 20, 4) and out["labels"].shape == (batch, 20)
    for i, (b, s, c) in enumerate(_reference(cls, box, anchors, image_sizes, post)):
        n = int(out["num_detections"][i])
        assert n == len(s)
        torch.testing.assert_close(out["scores"][i, :n], s)
        torch.testing.assert_close(out["boxes"][i, :n], b)
        assert torch.equal(out["labels"][i, :n], c)
        assert (out["labels"][i, n:] == -1).all() and (out["scores"][i, n:] == 0).all()


def test_empty_when_nothing_passes_threshold():
    anchors = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    post = SigmoidPostProcessor(BoxCoder(), score_threshold=0.5, max_detections=5)
    out = post([torch.full((2, 1, 3), -10.0)], [torch.zeros(2, 1, 4)], anchors, torch.tensor([[50, 50]] * 2))
    assert out["num_detections"].tolist() == [0, 0]
    assert out["boxes"].shape == (2, 5, 4)


def test_boxes_collapsing_when_clipped_are_dropped_and_output_keeps_its_size():
    # anchor 0 lies inside the 50x50 image; anchor 1 entirely right of it (clips to x1 = x2 = 50)
    anchors = [torch.tensor([[5.0, 5.0, 25.0, 25.0], [70.0, 10.0, 90.0, 30.0]])]
    logits = torch.full((1, 2, 1), 10.0)  # both score ~1.0
    post = SigmoidPostProcessor(BoxCoder(), score_threshold=0.3, max_detections=4)
    out = post([logits], [torch.zeros(1, 2, 4)], anchors, torch.tensor([[50, 50]]))
    assert out["num_detections"].tolist() == [1]
    assert out["boxes"].shape == (1, 4, 4)
    torch.testing.assert_close(out["boxes"][0, 0], torch.tensor([5.0, 5.0, 25.0, 25.0]))
    assert out["labels"][0].tolist() == [0, -1, -1, -1]
