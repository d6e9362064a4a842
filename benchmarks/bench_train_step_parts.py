"""The parts of a training step that are scaledet's own, before and after, paired in one process.

- *loss*: ``model.loss`` forward + backward (anchor matching, target encoding, focal and box
  losses) on head outputs of ``--model`` at ``--image-size``, batch ``--batch``, with random
  targets. Before: the focal loss through autograd of the composed ops; after: the hand-written
  ``_SparseFocalLoss`` (``scaledet/ops/losses.py``).
- *optimiser*: one SGD-with-momentum step over the model's trainable parameters with the
  gradients present. Before: ``torch.optim.SGD``'s CPU default (a Python loop per parameter);
  ``foreach``; after: ``fused`` (what ``scaledet.engine.trainer.build_optimizer`` now picks).
- *matching*: ``IoUMatcher`` with TPU's ``force_best_anchor`` on ``--boxes`` boxes and the model's
  anchors (one image). Before: a G x A mask and argmax for the forced anchors; after: a
  scatter-min over the G chosen anchors.
- *drop-connect*: forward + backward of SpineNet's stochastic depth on a ``[batch, 256, S/8, S/8]``
  branch. Before: ``x * mask / keep`` (two passes over the branch); after: ``x * mask.div_(keep)``.

    python benchmarks/bench_train_step_parts.py --model retinanet_resnet50_fpn --image-size 640
"""
from __future__ import annotations

from unittest import mock

import torch
import torch.nn.functional as F

from _harness import Bench, Ratio, main
from scaledet.ops import losses
from scaledet.registry import create_model
from scaledet.utils.benchmark import random_targets

LOSS_BEFORE, LOSS_AFTER = "loss fwd+bwd, composed autograd", "loss fwd+bwd, hand-written backward"
SGD_LOOP, SGD_FOREACH, SGD_FUSED = "SGD step, per-parameter loop", "SGD step, foreach", "SGD step, fused"
MATCH_BEFORE, MATCH_AFTER = "match force_best_anchor, G x A mask", "match force_best_anchor, scatter-min"
DROP_BEFORE, DROP_AFTER = "drop-connect fwd+bwd, x * mask / keep", "drop-connect fwd+bwd, scaled mask"


def composed_focal_loss(x, valid, pos_image, pos_anchor, pos_class, alpha: float, gamma: float) -> torch.Tensor:
    """``focal_loss_per_image`` as it was before: autograd through the composed ops."""
    neg_weight, _ = losses._focal_weights(alpha)
    log_p = F.logsigmoid(x)
    negative = (torch.exp(gamma * log_p) * (x - log_p)).sum(dim=-1) if gamma else (x - log_p).sum(dim=-1)
    if not bool(valid.all()):
        negative = negative * valid
    correction = losses._positive_correction(x[pos_image, pos_anchor, pos_class], alpha, gamma)
    return (negative.sum(dim=1) * neg_weight).index_add(0, pos_image, correction)


def masked_low_quality(iou: torch.Tensor, best_gt: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """``IoUMatcher._low_quality`` for ``force_best_anchor`` as it was before: a G x A mask."""
    gt_best_iou, gt_best_anchor = iou.max(dim=1)
    has_overlap = gt_best_iou > 0
    chosen = torch.zeros_like(iou, dtype=torch.bool)
    rows = torch.arange(iou.shape[0], device=iou.device)[has_overlap]
    chosen[rows, gt_best_anchor[has_overlap]] = True
    return torch.where(chosen.any(dim=0), chosen.int().argmax(dim=0), matches)


def variants(args) -> dict:
    kwargs = {"frozen_bn": False, "trainable_layers": 5} if "resnet" in args.model else {}
    torch.manual_seed(0)
    model = create_model(args.model, **kwargs).train()
    size, batch = args.image_size, args.batch
    grid = model.anchor_generator.grid_sizes(size, size)
    a = model.anchor_generator.num_anchors_per_location
    g = torch.Generator().manual_seed(0)

    def head(per_anchor: int) -> list[torch.Tensor]:
        return [(torch.randn(batch, a * per_anchor, h, w, generator=g) - 4).contiguous(
            memory_format=torch.channels_last).requires_grad_() for h, w in grid]

    outputs = {"cls_logits": head(model.num_classes), "box_deltas": head(4)}
    targets = random_targets(batch, size, model.num_classes, boxes_per_image=args.boxes, seed=0)
    sizes = [(size, size)] * batch

    def loss_step():
        model.loss(outputs, targets, sizes)["loss"].backward()

    def loss_before():
        with mock.patch.object(losses._SparseFocalLoss, "apply", composed_focal_loss):
            loss_step()

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    optimisers = {name: torch.optim.SGD(params, lr=1e-9, momentum=0.9, **kw)
                  for name, kw in ((SGD_LOOP, {"foreach": False}), (SGD_FOREACH, {"foreach": True}),
                                   (SGD_FUSED, {"fused": True}))}
    branch = torch.randn(batch, 256, size // 8, size // 8, generator=g).requires_grad_()
    upstream = torch.randn(branch.shape, generator=g)

    def drop_connect_step(scaled_mask: bool):
        def run():
            torch.manual_seed(1)
            keep = 0.8
            mask = branch.new_empty((batch, 1, 1, 1)).bernoulli_(keep)
            out = branch * mask.div_(keep) if scaled_mask else branch * mask / keep
            torch.autograd.grad(out, branch, upstream)
        return run

    from scaledet.ops.matcher import IoUMatcher

    all_anchors = torch.cat(model.anchor_generator(grid))
    matcher = IoUMatcher(0.5, 0.5, "force_best_anchor")
    before_matcher = IoUMatcher(0.5, 0.5, "force_best_anchor")
    before_matcher._low_quality = masked_low_quality
    gt = targets[0]["boxes"]
    assert torch.equal(matcher(gt, all_anchors), before_matcher(gt, all_anchors))

    notes = {"logits": [batch, model.anchor_generator.num_anchors(size, size), model.num_classes],
             "parameters": len(params), "parameter_elements": sum(p.numel() for p in params)}
    return {LOSS_BEFORE: loss_before, LOSS_AFTER: loss_step,
            **{name: opt.step for name, opt in optimisers.items()},
            MATCH_BEFORE: lambda: before_matcher(gt, all_anchors), MATCH_AFTER: lambda: matcher(gt, all_anchors),
            DROP_BEFORE: drop_connect_step(False), DROP_AFTER: drop_connect_step(True)}, notes


def add_arguments(p) -> None:
    p.add_argument("--model", default="retinanet_resnet50_fpn")
    p.add_argument("--image-size", type=int, default=640)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--boxes", type=int, default=8, help="ground-truth boxes per image")


BENCH = Bench("train_step_parts", __doc__, variants=variants, add_arguments=add_arguments, iters=7,
              ratios=[Ratio("fused / composed focal loss", LOSS_AFTER, LOSS_BEFORE),
                      Ratio("foreach / loop SGD", SGD_FOREACH, SGD_LOOP),
                      Ratio("fused / loop SGD", SGD_FUSED, SGD_LOOP),
                      Ratio("scatter-min / mask matching", MATCH_AFTER, MATCH_BEFORE),
                      Ratio("scaled mask / mul-div drop-connect", DROP_AFTER, DROP_BEFORE)],
              quick={"model": "retinanet_spinenet49_tiny", "image_size": 128})

if __name__ == "__main__":
    main(BENCH)
