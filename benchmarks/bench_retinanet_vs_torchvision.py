"""Time scaledet's ``retinanet_resnet50_fpn`` against torchvision's in one process.

Both models have the same architecture and weights (ours converted from torchvision's). Measured:
- inference, batch 1: model forward + post-processing (torchvision: its whole ``model(images)``,
  including its normalisation and resize, which is a no-op at this size) under
  ``torch.inference_mode``, after warm-up, median over ``--iters`` (the two models alternate);
- one training step, batch 2: forward + loss + backward + SGD step with the same random targets
  (both from scratch: trainable BatchNorm, all stages trained).

    python benchmarks/bench_retinanet_vs_torchvision.py --size 640 --iters 5 --threads 1

On a machine shared with other jobs use ``--threads 1``: with more threads than idle cores the
timings are dominated by whichever model loses the scheduling race.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torchvision

from scaledet.models.convert import torchvision_retinanet_checkpoint
from scaledet.registry import create_model


def median_seconds(fn_a: Callable[[], object], fn_b: Callable[[], object], iters: int,
                   warmup: int) -> tuple[float, float]:
    """Median wall time of each function; calls alternate so load changes hit both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(iters):
        for fn, bucket in zip((fn_a, fn_b), times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def random_targets(batch: int, size: int, num_classes: int, generator: torch.Generator) -> list[dict]:
    targets = []
    for _ in range(batch):
        xy = torch.rand(5, 2, generator=generator) * size * 0.7
        wh = 16 + torch.rand(5, 2, generator=generator) * size * 0.3
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)
        labels = torch.randint(1, num_classes, (5,), generator=generator)
        targets.append({"boxes": boxes, "labels": labels})
    return targets


def build_pair(size: int, train: bool):
    torch.manual_seed(0)
    tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None,
                                                             min_size=size, max_size=size)
    checkpoint = torchvision_retinanet_checkpoint(tv.state_dict(), verify=False)
    ours = create_model("retinanet_resnet50_fpn", **checkpoint["model_args"], frozen_bn=not train,
                        trainable_layers=5 if train else 3)
    ours.load_state_dict(checkpoint["model"])
    return tv, ours


def bench_inference(size: int, iters: int, warmup: int, optimize: bool = True) -> tuple[float, float]:
    tv, ours = build_pair(size, train=False)
    tv.eval()
    ours.eval()
    image = torch.rand(3, size, size)
    mean = torch.tensor(ours.pixel_mean)[:, None, None]
    std = torch.tensor(ours.pixel_std)[:, None, None]

    def run_tv():
        with torch.inference_mode():
            return tv([image])

    # Our deployment path: BatchNorm folded into the convolutions and channels-last memory
    # (Detector.optimized_for_inference); the same weights, so the same detections.
    fast = ours.optimized_for_inference() if optimize else ours

    def run_ours():
        with torch.inference_mode():
            x = ((image - mean) / std)[None]
            if optimize:
                x = x.contiguous(memory_format=torch.channels_last)
            return fast.postprocess(fast(x), [(size, size)])

    return median_seconds(run_tv, run_ours, iters, warmup)


def bench_training(size: int, iters: int, warmup: int) -> tuple[float, float]:
    tv, ours = build_pair(size, train=True)
    tv.train()
    ours.train()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, size, size, generator=generator)
    targets = random_targets(2, size, 91, generator)
    mean = torch.tensor(ours.pixel_mean)[:, None, None]
    std = torch.tensor(ours.pixel_std)[:, None, None]
    tv_opt = torch.optim.SGD(tv.parameters(), lr=1e-3, momentum=0.9)
    our_opt = torch.optim.SGD(ours.parameters(), lr=1e-3, momentum=0.9)

    def step_tv():
        losses = tv(list(images), targets)
        loss = sum(losses.values())
        tv_opt.zero_grad()
        loss.backward()
        tv_opt.step()

    ours.to(memory_format=torch.channels_last)  # as the trainer runs it (train.channels_last)

    def step_ours():
        x = ((images - mean) / std).contiguous(memory_format=torch.channels_last)
        loss = ours.loss(ours(x), targets, [(size, size)] * 2)["loss"]
        our_opt.zero_grad()
        loss.backward()
        our_opt.step()

    return median_seconds(step_tv, step_ours, iters, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--eager-too", action="store_true", help="also time our model without BN folding")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads, "
          f"{args.size}x{args.size}, median of {args.iters} after {args.warmup} warm-up")
    rows = [("inference, batch 1", *bench_inference(args.size, args.iters, args.warmup))]
    if args.eager_too:
        rows.append(("  eager, unfused", *bench_inference(args.size, args.iters, args.warmup, optimize=False)))
    if not args.skip_training:
        rows.append(("train step, batch 2", *bench_training(args.size, args.iters, args.warmup)))
    print(f"{'':22s}{'torchvision s':>14s}{'scaledet s':>12s}{'ours/tv':>9s}")
    for name, tv_s, our_s in rows:
        print(f"{name:22s}{tv_s:14.3f}{our_s:12.3f}{our_s / tv_s:9.2f}")


if __name__ == "__main__":
    main()
