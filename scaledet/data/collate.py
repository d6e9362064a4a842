"""Batching: pad images to a shared size divisible by the model's ``size_divisor``."""
from __future__ import annotations

import functools
import random
import signal
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from scaledet.errors import UsageError

__all__ = ["collate", "build_loader", "seed_worker"]


def _round_up(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor if divisor > 1 else value


def collate(batch: Sequence[tuple[torch.Tensor, dict]], size_divisor: int = 128) -> dict[str, Any]:
    """``dict(images=[B,3,Hp,Wp], targets, image_sizes)``; zero padding at bottom/right."""
    if len(batch) == 0:
        raise UsageError("collate got an empty batch")
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    image_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    pad_h = _round_up(max(h for h, _ in image_sizes), size_divisor)
    pad_w = _round_up(max(w for _, w in image_sizes), size_divisor)
    first = images[0]
    out = first.new_zeros((len(images), first.shape[0], pad_h, pad_w))
    for i, image in enumerate(images):
        out[i, :, : image.shape[-2], : image.shape[-1]].copy_(image)
    return {"images": out, "targets": targets, "image_sizes": image_sizes}


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` from the per-worker torch seed the DataLoader derived.

    Workers also ignore SIGINT: Ctrl-C reaches the whole process group, and a worker that died
    of it would make the main process fail before it can save its checkpoint; the DataLoader
    ends its workers itself when the main process stops (SIGTERM still ends them)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, num_workers: int = 0,
                 size_divisor: int = 128, seed: int = 0, drop_last: bool = False,
                 sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader whose order and augmentation are reproducible for a given ``seed``."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, size_divisor=size_divisor),
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
