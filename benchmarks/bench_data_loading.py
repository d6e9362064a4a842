"""Decode + augment throughput of the training pipeline (COCO JSON reader, scale-jitter
TrainTransform, collate) on coco_tiny with 0, 1 and 2 DataLoader workers, against the model's
own training-step rate: is the input pipeline the bottleneck?"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from _bench_args import done, measure, parser, setup
from scaledet.data.coco import CocoDetection
from scaledet.data.collate import build_loader
from scaledet.data.transforms import TrainTransform
from scaledet.registry import create_model
from scaledet.utils.benchmark import training_step

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco_tiny"
p = parser(__doc__, iters=2)
p.add_argument("--batch-size", type=int, default=4, help="loader batch size")
p.add_argument("--images", type=int, default=48, help="images per loader pass")
args = p.parse_args()
if not DATA.is_dir():
    raise SystemExit(f"coco_tiny not found at {DATA}")
setup(args)
torch.manual_seed(0)
model = create_model(args.model).eval()
dataset = CocoDetection(DATA / "train2017", DATA / "annotations" / "instances_train2017.json",
                        TrainTransform(args.image_size, (0.8, 1.2), mean=model.pixel_mean, std=model.pixel_std))
subset = torch.utils.data.Subset(dataset, range(min(args.images, len(dataset))))
rates = {}
for workers in (0, 1, 2):
    loader = build_loader(subset, args.batch_size, shuffle=True, num_workers=workers, size_divisor=model.size_divisor)
    iterator = iter(loader)
    next(iterator)  # start the workers
    start, cpu_start, seen = time.perf_counter(), time.process_time(), 0
    for batch in iterator:
        seen += batch["images"].shape[0]
    wall = time.perf_counter() - start
    rates[workers] = seen / wall
    print(f"loader, {workers} worker(s): {rates[workers]:7.1f} images/s ({seen} images in {wall:.2f} s; "
          f"main-process CPU {time.process_time() - cpu_start:.2f} s)")
    del iterator, loader
images = torch.randn(args.batch, 3, args.image_size, args.image_size)
sizes = torch.tensor([[args.image_size] * 2] * args.batch)
step = measure(f"train step ({args.model}, batch {args.batch})", training_step(model, images, sizes,
                                                                                torch.device("cpu"), None), args)
train_rate = step["images_per_s"]
print(f"training consumes {train_rate:.2f} images/s; the 0-worker loader supplies {rates[0]:.1f} "
      f"({rates[0] / train_rate:.0f}x what training needs)")
done({"bench": "data_loading", "loader_images_per_s": rates, "train_images_per_s": train_rate})
