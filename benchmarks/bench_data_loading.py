"""Decode + augment throughput of the training pipeline (COCO JSON reader, scale-jitter
TrainTransform, collate) on coco_tiny with 0, 1 and 2 DataLoader workers, against the model's
own training-step rate: is the input pipeline the bottleneck?

One call of a loader variant is one pass over ``--images`` images (worker start-up included);
the figures are images per second.

    python benchmarks/bench_data_loading.py [--model retinanet_spinenet49s --image-size 640]
"""
from __future__ import annotations

from pathlib import Path

import torch

from _bench_args import add_model_arguments
from _harness import Bench, main
from scaledet.utils.benchmark import training_step

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco_tiny"
WORKERS = (0, 1, 2)
STEP = "train step"


def loader_name(workers: int) -> str:
    return f"loader pass, {workers} worker(s)"


def variants(args) -> dict:
    from scaledet.data.coco import CocoDetection
    from scaledet.data.collate import build_loader
    from scaledet.data.transforms import TrainTransform
    from scaledet.registry import create_model

    if not DATA.is_dir():
        raise SystemExit(f"coco_tiny not found at {DATA}")
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    dataset = CocoDetection(DATA / "train2017", DATA / "annotations" / "instances_train2017.json",
                            TrainTransform(args.image_size, (0.8, 1.2), mean=model.pixel_mean, std=model.pixel_std))
    subset = torch.utils.data.Subset(dataset, range(min(args.images, len(dataset))))

    def one_pass(workers: int):
        def run():
            loader = build_loader(subset, args.batch_size, shuffle=True, num_workers=workers,
                                  size_divisor=model.size_divisor)
            for _ in loader:
                pass
        return run

    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    sizes = torch.tensor([[args.image_size] * 2] * args.batch)
    built = {loader_name(w): one_pass(w) for w in WORKERS}
    built[STEP] = training_step(model, images, sizes, torch.device("cpu"), None)
    args.pass_images = len(subset)
    return built


def derived(medians: dict[str, float], args) -> dict[str, float]:
    train_rate = args.batch / medians[STEP]
    out = {"train step images/s": train_rate}
    for w in WORKERS:
        rate = args.pass_images / medians[loader_name(w)]
        out[f"loader images/s, {w} worker(s)"] = rate
        out[f"loader / training rate, {w} worker(s)"] = rate / train_rate
    return out


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--batch-size", type=int, default=4, help="loader batch size")
    p.add_argument("--images", type=int, default=48, help="images per loader pass")


BENCH = Bench("data_loading", __doc__, variants=variants, derived=derived, add_arguments=add_arguments, iters=3,
              quick={"model": "retinanet_spinenet49_tiny", "image_size": 128, "images": 8})

if __name__ == "__main__":
    main(BENCH)
