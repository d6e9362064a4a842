"""Our vectorised SigmoidPostProcessor vs a per-image, per-class Python loop reference, on
retinanet_spinenet49s-shaped outputs at 640 (P3-P7, 9 anchors, 91 classes, 76,725 anchors).

Logits are drawn so that about 0.1% of (anchor, class) pairs score above 0.05, as a trained
RetinaNet's do on a typical COCO image; both versions see the same tensors and must agree.

    python benchmarks/bench_postprocess.py [--model retinanet_spinenet49s --image-size 640]
"""
from __future__ import annotations

import torch
from torchvision.ops import nms

from _bench_args import add_model_arguments
from _harness import Bench, Ratio, main
from scaledet.ops.postprocess import clip_boxes
from scaledet.registry import create_model

LOOP, VECTORISED = "per-image/per-class loop", "vectorised, threshold first (scaledet)"


def head_outputs(args):
    """Head-shaped logits and deltas where about ``--positive-fraction`` of the pairs score > 0.05."""
    meta_model = create_model(args.model)  # only its post-processor, anchors and class count are used
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
    return meta_model.postprocessor, cls, box, anchors, torch.tensor([[size, size]] * batch)


def loop_reference(post, cls, box, anchors, sizes):
    """Per image, per level top-k, then per class NMS in a Python loop (the naive way)."""
    results = []
    num_classes = cls[0].shape[-1]
    for i in range(len(sizes)):
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
        if post.drop_degenerate_boxes:  # clipped to no area: not a detection (the post-processor's default)
            real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores, labels = boxes[real], scores[real], labels[real]
        kept = []
        for c in labels.unique().tolist():
            members = torch.nonzero(labels == c).squeeze(1)
            kept.append(members[nms(boxes[members], scores[members], post.nms_iou)])
        kept = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
        kept = kept[scores[kept].argsort(descending=True)][: post.max_detections]
        results.append((boxes[kept], scores[kept], labels[kept]))
    return results


def variants(args):
    post, cls, box, anchors, sizes = head_outputs(args)

    def loop():
        with torch.inference_mode():
            return loop_reference(post, cls, box, anchors, sizes)

    def vectorised():
        with torch.inference_mode():
            return post(cls, box, anchors, sizes)

    ref, ours = loop(), vectorised()
    for i, (b, s, l) in enumerate(ref):
        n = int(ours["num_detections"][i])
        assert n == len(s), (n, len(s))
        assert torch.allclose(ours["scores"][i, :n], s) and torch.equal(ours["labels"][i, :n].sort()[0], l.sort()[0])
    candidates = int(sum((torch.sigmoid(t[0]) > post.score_threshold).sum() for t in cls))
    return {LOOP: loop, VECTORISED: vectorised}, {"candidates_above_threshold": candidates,
                                                    "detections_kept": [len(r[1]) for r in ref]}


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--positive-fraction", type=float, default=1e-3)


BENCH = Bench("postprocess", __doc__, variants=variants, add_arguments=add_arguments, iters=10, warmup=2,
              ratios=[Ratio("vectorised / loop", VECTORISED, LOOP)],
              quick={"model": "retinanet_spinenet49_tiny", "image_size": 128})

if __name__ == "__main__":
    main(BENCH)
