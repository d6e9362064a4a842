"""Reproducible, resumable data order and augmentation.

The order of epoch ``e`` is a permutation drawn from ``(seed, e)``, and every sample's
augmentation is seeded from ``(seed, e, position)``. Both are pure functions of the step, so a
resumed run sees exactly the batches an uninterrupted run would, whatever the worker count;
under DDP each rank takes every ``world``-th position of the same permutation.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from scaledet.errors import UsageError


class ResumableSampler(Sampler[int]):
    """Yields codes ``epoch * N + index`` for an endless stream of epochs, from ``start`` on.

    ``start`` counts samples already consumed by this rank.
    """

    def __init__(self, dataset_len: int, *, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1,
                 start: int = 0):
        if dataset_len < world:
            raise UsageError(f"data set has {dataset_len} items, fewer than the {world} processes")
        self.n = dataset_len
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world = world
        self.start = start
        self.per_rank = dataset_len // world  # equal shards; the remainder is dropped each epoch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self):
        consumed = self.start
        while True:
            epoch, offset = divmod(consumed, self.per_rank)
            order = self.epoch_order(epoch)[self.rank::self.world][: self.per_rank]
            for index in order[offset:].tolist():
                yield epoch * self.n + index
            consumed = (epoch + 1) * self.per_rank

    def __len__(self) -> int:  # one epoch; the stream itself is endless
        return self.per_rank


class SeededAugmentation(Dataset):
    """Decodes sampler codes and runs the wrapped data set under a per-sample seed."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.n = len(dataset)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, code: int):
        epoch, index = divmod(int(code), self.n)
        sample_seed = (self.seed * 1_000_003 + epoch * 7_919 + index) % 2**63
        # fork_rng keeps the caller's global RNG untouched when loading in the main process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            np_state = np.random.get_state()
            py_state = random.getstate()
            np.random.seed(sample_seed % 2**32)
            random.seed(sample_seed)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)
