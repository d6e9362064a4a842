"""Dynamic batching: requests that arrive together share one model run on one worker thread.

The first waiting image opens a batch; the batch closes when it holds ``max_batch`` images or
``max_wait_s`` has passed since it opened, whichever comes first. Images that queued while the
model was busy join the next batch at once. The model only ever runs on one thread of its own
(with the intra-op threads torch or ONNX Runtime was given), so concurrent requests never
compete for the cores. Written by hand: the ASGI stack has no request-batching facility.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import torch

from scaledet.errors import UsageError

BatchFn = Callable[[list[torch.Tensor]], list[Any]]


class QueueFull(RuntimeError):
    """More images are waiting than the service was told to hold."""


@dataclass(frozen=True)
class BatchedResult:
    output: Any
    batch_size: int
    wait_s: float  # queued, before the model run started
    run_s: float  # the model run this image shared


@dataclass
class _Job:
    image: torch.Tensor
    future: asyncio.Future
    enqueued: float


class DynamicBatcher:
    def __init__(self, run_batch: BatchFn, *, max_batch: int = 8, max_wait_s: float = 0.005,
                 max_queue: int = 256, on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1:
            raise UsageError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_s < 0:
            raise UsageError(f"max_wait must not be negative, got {max_wait_s}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scaledet-model")
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._serve(), name="scaledet-batcher")

    async def stop(self) -> None:
        """Cancel the gathering loop, fail whatever still waits, and let a running batch finish."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the service is shutting down"))
        self.executor.shutdown(wait=True)

    async def submit(self, image: torch.Tensor) -> BatchedResult:
        if self._queue is None or self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self._queue.qsize()} images are already waiting (limit {self.max_queue}); retry later")
        job = _Job(image, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.put_nowait(job)
        return await job.future

    async def _gather(self) -> list[_Job]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [job for job in await self._gather() if not job.future.done()]  # done: client gave up
            if not batch:
                continue
            started = time.perf_counter()
            try:
                outcomes = await loop.run_in_executor(self.executor, self._run_isolated,
                                                      [job.image for job in batch])
            except asyncio.CancelledError:
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(RuntimeError("the service stopped before this image ran"))
                raise
            run_s = time.perf_counter() - started
            if self.on_batch is not None:
                self.on_batch(len(batch), run_s)
            for job, outcome in zip(batch, outcomes):
                if job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(BatchedResult(outcome, len(batch), started - job.enqueued, run_s))

    def _run_isolated(self, images: list[torch.Tensor]) -> list[Any]:
        """The batch's outputs; if the batch fails, each image alone, so one image that breaks the
        model fails only its own request."""
        try:
            return list(self.run_batch(images))
        except Exception as err:  # noqa: BLE001 - turned into that request's error below
            if len(images) == 1:
                return [err]
        outcomes: list[Any] = []
        for image in images:
            try:
                outcomes.append(self.run_batch([image])[0])
            except Exception as err:  # noqa: BLE001
                outcomes.append(err)
        return outcomes
