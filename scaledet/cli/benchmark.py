"""``scaledet benchmark MODEL``: latency, throughput, memory and achieved GFLOP/s."""
from __future__ import annotations

import json

from scaledet.cli.common import image_size_arg, new_parser
from scaledet.errors import UsageError

EXAMPLE = """  scaledet benchmark retinanet_spinenet49s --image-size 640 --iters 10
  scaledet benchmark retinanet_spinenet49s --backend onnxruntime --json
  scaledet benchmark retinanet_spinenet49_tiny --train --batch 4 --image-size 256
  scaledet benchmark retinanet_nasfpn_r50 --device cuda --amp bf16 --batch 8

Inference is forward + post-processing (NMS) under torch.inference_mode; --train is forward + loss +
backward + SGD step on random targets. The model has its initial weights (speed does not depend on
them). On CPU, peak memory is the process's peak resident set size (getrusage), not the model alone.
"""


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "benchmark", "measure a model's speed and memory", EXAMPLE)
    p.add_argument("model", help="registered model name (see scaledet info --list)")
    p.add_argument("--image-size", type=image_size_arg, default=None,
                   help="square input size (default: the model's own)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    p.add_argument("--backend", default="torch", choices=["torch", "compile", "onnxruntime"],
                   help="eager PyTorch, torch.compile, or ONNX Runtime on an export (default torch)")
    p.add_argument("--device", default="cpu", metavar="cpu|cuda|cuda:N", help="where to run (default cpu)")
    p.add_argument("--amp", default=None, choices=["bf16", "fp16"], help="autocast dtype (default: fp32)")
    p.add_argument("--train", action="store_true", help="time a training step instead of inference")
    p.add_argument("--num-classes", type=int, default=None, help="number of classes (default: the model's own)")
    p.add_argument("--iters", type=int, default=10, help="timed calls (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch (and ONNX Runtime) intra-op threads (default: torch's; on a shared machine 1 is "
                        "often faster)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def format_report(r: dict) -> str:
    lines = [
        f"{r['model']} {r['mode']} | backend {r['backend']} | {r['device']} | "
        f"{r['amp'] or 'fp32'} | {r['image_size']}px x batch {r['batch']} | {r['iters']} iters after {r['warmup']}",
        f"latency     p50 {r['p50_ms']:.1f} ms   p90 {r['p90_ms']:.1f} ms   mean {r['mean_ms']:.1f} ms   "
        f"(CPU time p50 {r['cpu_p50_ms']:.1f} ms)",
        f"throughput  {r['images_per_s']:.2f} images/s",
        f"model       {r['params'] / 1e6:.2f} M params, {r['macs'] / 1e9:.2f} G multiply-adds per image",
        f"compute     {r['gflops_per_s']:.1f} GFLOP/s achieved (2 x MACs x images/s"
        + (", x3 for forward+backward)" if r["mode"] == "train" else ")"),
    ]
    if r["peak_memory_kind"] == "process_peak_rss":
        lines.append(f"memory      process peak RSS {r['peak_memory_mb']:.0f} MB (RSS {r['rss_start_mb']:.0f} MB "
                     f"before the model was built)")
    else:
        lines.append(f"memory      peak CUDA allocation {r['peak_memory_mb']:.0f} MB")
    lines.append(f"machine     load average {r['loadavg']}, {r['cpus']} CPUs, {r['torch_threads']} torch threads")
    return "\n".join(lines)


def run(args) -> int:
    import torch

    from scaledet.engine.distributed import resolve_device
    from scaledet.utils.benchmark import benchmark

    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    result = benchmark(args.model, image_size=args.image_size, batch=args.batch, backend=args.backend,
                       device=str(resolve_device(args.device)), amp=args.amp, train=args.train, iters=args.iters, warmup=args.warmup,
                       model_kwargs=kwargs)
    print(json.dumps(result) if args.json else format_report(result))
    return 0
