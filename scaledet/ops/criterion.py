"""What every loss module (criterion) shares: the cross-process loss normaliser."""
from __future__ import annotations

from typing import Callable

import torch


class Criterion(torch.nn.Module):
    """Base of the loss modules.

    A loss divided by a count over the batch (positives, valid pixels) must, under DDP, divide by
    the count of the *global* batch (as detectron2 and mmdet do): gradients are averaged over
    processes, so each process divides by its share, ``global count / processes``, and the
    average is then the one-process loss of the global batch. Without
    :meth:`distribute_normalizer` every process would divide by its own count.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sum_over_processes: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.num_processes = 1

    def distribute_normalizer(self, sum_over_processes: Callable[[torch.Tensor], torch.Tensor] | None,
                              num_processes: int) -> None:
        """Count over all processes' batches (``sum_over_processes`` is an all-reduce sum);
        ``None`` restores the single-process behaviour."""
        self._sum_over_processes = sum_over_processes
        self.num_processes = num_processes if sum_over_processes is not None else 1

    def global_count(self, count: torch.Tensor) -> torch.Tensor:
        """``count`` summed over the processes (no gradient), or ``count`` itself without DDP."""
        if self._sum_over_processes is None:
            return count
        return self._sum_over_processes(count.detach())
