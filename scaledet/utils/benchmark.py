"""Latency, throughput and memory of a detector: the measuring behind ``scaledet benchmark``.

Inference = ``forward`` + ``postprocess`` under ``torch.inference_mode`` (or one ONNX Runtime
``session.run`` of the exported graph, which holds both). Training = forward + loss + backward +
optimizer step on random targets. Latency is wall-clock per call after warm-up; p50/p90 over the
timed calls.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the timed calls (tensors only). On
CPU there is no allocator counter, so it is the process's peak resident set size
(``resource.getrusage(...).ru_maxrss``): a high-water mark of the whole process since it started
(Python, libraries, weights and activations), not of the benchmark alone; ``rss_start_mb`` gives
the resident size before the model was built for comparison.
"""
from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from scaledet.errors import UsageError

BACKENDS = ("torch", "compile", "onnxruntime")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def machine_note() -> dict:
    """What else was running: load average over 1/5/15 min, CPU count, torch threads."""
    load = os.getloadavg()
    return {"loadavg": [round(x, 2) for x in load], "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def time_calls(fn: Callable[[], object], *, iters: int, warmup: int, sync: Callable[[], None] | None = None,
               cpu_times: list[float] | None = None) -> list[float]:
    """Wall seconds per call of ``fn`` for ``iters`` calls after ``warmup`` untimed ones.

    ``cpu_times``, if given, receives the process CPU seconds of each call: on a shared machine
    the wall time includes waiting for a core, the CPU time (with one thread) does not."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(iters):
        cpu_start, start = time.process_time(), time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - cpu_start)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def summarise(times: list[float], batch: int, cpu_times: list[float] | None = None) -> dict:
    p50 = percentile(times, 50)
    out = {"p50_ms": p50 * 1e3, "p90_ms": percentile(times, 90) * 1e3, "mean_ms": statistics.fmean(times) * 1e3,
           "images_per_s": batch / p50}
    if cpu_times:
        out["cpu_p50_ms"] = percentile(cpu_times, 50) * 1e3
    return out


def rss_mb() -> float:
    """Current resident set size (Linux /proc), falling back to the peak where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def random_targets(batch: int, image_size: int, num_classes: int, boxes_per_image: int = 5,
                   seed: int = 0, device: torch.device | str = "cpu") -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(batch):
        xy = torch.rand(boxes_per_image, 2, generator=g) * image_size * 0.7
        wh = (0.05 + torch.rand(boxes_per_image, 2, generator=g) * 0.25) * image_size
        boxes = torch.cat([xy, (xy + wh).clamp(max=image_size)], dim=1)
        targets.append({"boxes": boxes.to(device), "labels": torch.randint(num_classes, (boxes_per_image,),
                                                                            generator=g).to(device),
                        "iscrowd": torch.zeros(boxes_per_image, dtype=torch.bool, device=device)})
    return targets


def _autocast(device: torch.device, amp: str | None):
    if amp is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def inference_step(model, images: torch.Tensor, sizes: torch.Tensor, device: torch.device, amp: str | None,
                   forward: Callable | None = None) -> Callable[[], object]:
    forward = forward or model

    def step():
        with torch.inference_mode(), _autocast(device, amp):
            return model.postprocess(forward(images), sizes)

    return step


def training_step(model, images: torch.Tensor, sizes: torch.Tensor, device: torch.device, amp: str | None,
                  forward: Callable | None = None) -> Callable[[], object]:
    forward = forward or model
    targets = random_targets(images.shape[0], images.shape[-1], model.num_classes, device=device)
    image_sizes = [tuple(s) for s in sizes.tolist()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            outputs = forward(images)
        loss = model.loss(outputs, targets, image_sizes)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    return step


def onnxruntime_step(model, image_size: int, batch: int, images: torch.Tensor, sizes: torch.Tensor,
                     workdir: Path) -> Callable[[], object]:
    from scaledet.export.onnx import export_onnx, ort_session

    path = export_onnx(model, workdir / "model.onnx", image_size=image_size, batch_size=batch, verify=False)
    session = ort_session(path)
    feed = {"images": images.cpu().numpy(), "image_sizes": sizes.cpu().numpy()}
    return lambda: session.run(None, feed)


def benchmark(model_name: str, *, image_size: int | None = None, batch: int = 1, backend: str = "torch",
              device: str = "cpu", amp: str | None = None, train: bool = False, iters: int = 10, warmup: int = 2,
              model_kwargs: dict | None = None, seed: int = 0) -> dict:
    """Measure one configuration; returns a flat dict (see module doc for the memory figure)."""
    from scaledet.registry import create_model
    from scaledet.utils.flops import count_macs, count_params

    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "onnxruntime" and (train or amp or device != "cpu"):
        raise UsageError("--backend onnxruntime measures CPU fp32 inference only (no --train, --amp or cuda)")
    if amp is not None and amp not in AMP_DTYPES:
        raise UsageError(f"unknown --amp {amp!r}; allowed: {', '.join(AMP_DTYPES)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for but no CUDA device is available")
    if iters < 1 or warmup < 0 or batch < 1:
        raise UsageError("need --iters >= 1, --warmup >= 0 and --batch >= 1")
    rss_start = rss_mb()
    torch.manual_seed(seed)
    model = create_model(model_name, **(model_kwargs or {})).eval()
    size = image_size or model.default_image_size
    params, macs = count_params(model), count_macs(model, size)
    model.to(dev)
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(dev)
    sizes = torch.tensor([[size, size]] * batch, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    forward = torch.compile(model) if backend == "compile" else None
    with tempfile.TemporaryDirectory(prefix="scaledet-bench-") as workdir:
        if backend == "onnxruntime":
            step = onnxruntime_step(model, size, batch, images, sizes, Path(workdir))
        elif train:
            step = training_step(model, images, sizes, dev, amp, forward)
        else:
            step = inference_step(model, images, sizes, dev, amp, forward)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        cpu_times: list[float] = []
        times = time_calls(step, iters=iters, warmup=warmup, sync=sync, cpu_times=cpu_times)
    result = {"model": model_name, "backend": backend, "device": str(dev), "mode": "train" if train else "inference",
              "amp": amp, "image_size": size, "batch": batch, "iters": iters, "warmup": warmup,
              **summarise(times, batch, cpu_times), "params": params, "macs": macs}
    # forward + backward is counted as 3x the forward multiply-adds (the usual convention)
    result["gflops_per_s"] = 2 * macs * (3 if train else 1) * result["images_per_s"] / 1e9
    if dev.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        result["peak_memory_kind"] = "cuda_max_memory_allocated"
    else:
        result["peak_memory_mb"] = peak_rss_mb()
        result["peak_memory_kind"] = "process_peak_rss"
        result["rss_start_mb"] = rss_start
    result.update(machine_note())
    return result
