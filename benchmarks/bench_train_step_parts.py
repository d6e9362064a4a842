"""The parts of a training step that are scaledet's own, before and after, paired in one process.

- *loss*: ``model.loss`` forward + backward (anchor matching, target encoding, focal and box
  losses) on head outputs of ``--model`` at ``--image-size``, batch ``--batch``, with random
  targets. Before: the focal loss through autograd of the composed ops; after: the hand-written
  ``_SparseFocalLoss`` (``scaledet/ops/losses.py``).
- *optimiser*: one SGD-with-momentum step over the model's trainable parameters with the
  gradients present. Before: ``torch.optim.SGD``'s CPU default (a Python loop per parameter);
  ``foreach``; after: ``fused`` (what ``scaledet.engine.trainer.build_optimizer`` now picks).

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


def composed_focal_loss(x, valid, pos_image, pos_anchor, pos_class, alpha: float, gamma: float) -> torch.Tensor:
    """``focal_loss_per_image`` as it was before: autograd through the composed ops."""
    neg_weight, _ = losses._focal_weights(alpha)
    log_p = F.logsigmoid(x)
    negative = (torch.exp(gamma * log_p) * (x - log_p)).sum(dim=-1) if gamma else (x - log_p).sum(dim=-1)
    if not bool(valid.all()):
        negative = negative * valid
    correction = losses._positive_correction(x[pos_image, pos_anchor, pos_class], alpha, gamma)
    return (negative.sum(dim=1) * neg_weight).index_add(0, pos_image, correction)


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
    notes = {"logits": [batch, model.anchor_generator.num_anchors(size, size), model.num_classes],
             "parameters": len(params), "parameter_elements": sum(p.numel() for p in params)}
    return {LOSS_BEFORE: loss_before, LOSS_AFTER: loss_step,
            **{name: opt.step for name, opt in optimisers.items()}}, notes


def add_arguments(p) -> None:
    p.add_argument("--model", default="retinanet_resnet50_fpn")
    p.add_argument("--image-size", type=int, default=640)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--boxes", type=int, default=8, help="ground-truth boxes per image")


BENCH = Bench("train_step_parts", __doc__, variants=variants, add_arguments=add_arguments, iters=7,
              ratios=[Ratio("fused / composed focal loss", LOSS_AFTER, LOSS_BEFORE),
                      Ratio("foreach / loop SGD", SGD_FOREACH, SGD_LOOP),
                      Ratio("fused / loop SGD", SGD_FUSED, SGD_LOOP)],
              quick={"model": "retinanet_spinenet49_tiny", "image_size": 128})

if __name__ == "__main__":
    main(BENCH)
