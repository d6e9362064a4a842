"""Our vectorised SigmoidPostProcessor vs a per-image, per-class Python loop reference, on
retinanet_spinenet49s-shaped outputs at 640 (P3-P7, 9 anchors, 91 classes, 76,725 anchors).

Logits are drawn so that about 0.1% of (anchor, class) pairs score above 0.05, as a trained
RetinaNet's do on a typical COCO image; both versions see the same tensors and must agree."""
from __future__ import annotations

import torch

from torchvision.ops import nms

from _bench_args import done, measure, parser, ratio, setup
from scaledet.ops.postprocess import clip_boxes
from scaledet.registry import create_model

p = parser(__doc__, iters=10)
p.add_argument("--positive-fraction", type=float, default=1e-3)
args = p.parse_args()
args.warmup = max(args.warmup, 2)
setup(args)
meta_model = create_model(args.model)  # only its post-processor, anchors and class count are used
post = meta_model.postprocessor
size, batch, num_classes = args.image_size, args.batch, meta_model.num_classes
grid = meta_model.anchor_generator.grid_sizes(size, size)
anchors = meta_model.anchor_generator(grid)
g = torch.Generator().manual_seed(0)
a = meta_model.anchor_generator.num_anchors_per_location
cls = []
for h, w in grid:
    logits = torch.randn(batch, h * w * a, num_classes, generator=g) - 7.0
    hot = torch.rand(logits.shape, generator=g) < args.positive_fraction
    cls.append(torch.where(hot, torch.rand(logits.shape, generator=g) * 6 - 3, logits))
box = [torch.randn(batch, t.shape[1], 4, generator=g) * 0.3 for t in cls]
sizes = torch.tensor([[size, size]] * batch)


def loop_reference():
    """Per image, per level top-k, then per class NMS in a Python loop (the naive way)."""
    results = []
    for i in range(batch):
        boxes_all, scores_all, labels_all = [], [], []
        for logits, deltas, level_anchors in zip(cls, box, anchors):
            scores = torch.sigmoid(logits[i]).flatten()
            top, idx = scores.topk(min(post.pre_nms_topk, scores.numel()))
            keep = top > post.score_threshold
            top, idx = top[keep], idx[keep]
            anchor_idx, labels = idx // num_classes, idx % num_classes
            decoded = post.box_coder.decode(deltas[i][anchor_idx], level_anchors[anchor_idx])
            boxes_all.append(clip_boxes(decoded[None], sizes[i:i + 1])[0])
            scores_all.append(top)
            labels_all.append(labels)
        boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
        kept = []
        for c in labels.unique().tolist():
            members = torch.nonzero(labels == c).squeeze(1)
            kept.append(members[nms(boxes[members], scores[members], post.nms_iou)])
        kept = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
        kept = kept[scores[kept].argsort(descending=True)][: post.max_detections]
        results.append((boxes[kept], scores[kept], labels[kept]))
    return results


def vectorised():
    return post(cls, box, anchors, sizes)


with torch.inference_mode():
    ref, ours = loop_reference(), vectorised()
    for i, (b, s, l) in enumerate(ref):
        n = int(ours["num_detections"][i])
        assert n == len(s), (n, len(s))
        assert torch.allclose(ours["scores"][i, :n], s) and torch.equal(ours["labels"][i, :n].sort()[0], l.sort()[0])
    print(f"candidates above threshold per image: "
          f"{int(sum((torch.sigmoid(t[0]) > post.score_threshold).sum() for t in cls))}, "
          f"detections kept: {[len(r[1]) for r in ref]} (both versions agree)")
    before = measure("per-image/per-class loop", loop_reference, args)
    after = measure("vectorised, threshold first (scaledet)", vectorised, args)
done({"bench": "postprocess", "ratio": ratio("vectorised vs loop", before, after)})
