"""Where one training step spends its time: ``torch.profiler`` over a few steps, top ops by self CPU time.

    python benchmarks/profile_train_step.py --model retinanet_resnet50_fpn --image-size 640 --batch 2
    python benchmarks/profile_train_step.py --model retinanet_spinenet49s --image-size 640 --batch 2
    python benchmarks/profile_train_step.py --torchvision          # torchvision's RetinaNet, same settings

A profile, not a timing benchmark: it shows each op's share of the step (self CPU time, summed
over ``--steps`` profiled steps after ``--warmup`` unprofiled ones), which is what decides where
to cut. The step is the trainer's: images to the device in channels-last memory, forward, loss,
backward and the optimiser built by ``scaledet.engine.trainer.build_optimizer``, with Winograd
convolutions where they apply (``train.winograd``; ``--no-winograd`` for direct ones only). ResNet models are
built as torchvision's from-scratch configuration (trainable BatchNorm, all stages), the same as
``bench_retinanet_vs_torchvision.py``. ``--json`` writes the table; ``--groups`` adds a summary by
part of the step (convolutions, BatchNorm, loss and matching, optimiser, ...).
"""
from __future__ import annotations

import argparse
import json
import re
import resource
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from scaledet.config import load_config
from scaledet.engine.trainer import apply_compute_settings, build_optimizer
from scaledet.registry import create_model
from scaledet.utils.benchmark import random_targets

# name patterns -> part of the step (first match wins); what is not listed is "other"
GROUPS = [
    ("convolution (fwd+bwd)", r"conv|mkldnn_convolution"),
    ("BatchNorm (fwd+bwd)", r"batch_norm"),
    ("optimiser step", r"^Optimizer|_foreach_|_fused_sgd|_fused_adam|sgd"),
    ("matching + targets + loss", r"^(criterion|loss)"),
    ("activations / add / pool / resize", r"relu|threshold|add|max_pool|upsample|silu|sigmoid|mul"),
]


def build(args):
    if args.torchvision:
        import torchvision

        torch.manual_seed(0)
        tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None,
                                                                 min_size=args.image_size, max_size=args.image_size)
        return tv, None
    kwargs = {"frozen_bn": False, "trainable_layers": 5} if "resnet" in args.model else {}
    torch.manual_seed(0)
    model = create_model(args.model, **kwargs)
    cfg = load_config(None, [f"optim.lr={args.lr}", "optim.weight_decay=0.0"])
    return model, build_optimizer(model, cfg)


def step_function(args):
    model, optimizer = build(args)
    model.train()
    size = args.image_size
    num_classes = 91 if args.torchvision else model.num_classes
    targets = random_targets(args.batch, size, num_classes, seed=0)
    images = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    if args.torchvision:
        for t in targets:
            t["labels"] = t["labels"].clamp(min=1)
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

        def step():
            losses = model(list(images), targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
        return step

    apply_compute_settings(model, load_config(None, [f"train.winograd={str(not args.no_winograd).lower()}"]))
    sizes = [(size, size)] * args.batch

    def step():
        optimizer.zero_grad(set_to_none=True)
        with record_function("data to device"):
            x = images.to("cpu", non_blocking=True).contiguous(memory_format=torch.channels_last)
        with record_function("forward (network)"):
            outputs = model(x)
        with record_function("loss (matching + targets + focal/box)"):
            loss = model.loss(outputs, targets, sizes)["loss"]
        loss.backward()
        optimizer.step()
    return step


def group_of(name: str) -> str:
    for group, pattern in GROUPS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return group
    return "other"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="retinanet_resnet50_fpn")
    p.add_argument("--torchvision", action="store_true", help="profile torchvision's retinanet_resnet50_fpn")
    p.add_argument("--image-size", type=int, default=640)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--no-winograd", action="store_true", help="direct convolutions only (train.winograd=false)")
    p.add_argument("--malloc", choices=["default", "retain"], default="default",
                   help="retain: glibc malloc keeps freed memory, as the trainer sets it (scaledet.utils.memory)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.malloc == "retain":
        from scaledet.utils.memory import retain_freed_memory

        retain_freed_memory()
    step = step_function(args)
    for _ in range(args.warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(({"op": e.key, "self_ms": e.self_cpu_time_total / 1e3 / args.steps,
                    "share": e.self_cpu_time_total / total, "calls": e.count // args.steps}
                   for e in events), key=lambda r: -r["self_ms"])
    regions = {e.key: e.cpu_time_total / 1e3 / args.steps for e in events
               if e.key in ("data to device", "forward (network)", "loss (matching + targets + focal/box)")}
    regions.update({e.key: e.cpu_time_total / 1e3 / args.steps for e in events if e.key.startswith("Optimizer.")})
    groups: dict[str, float] = {}
    for r in rows:
        groups[group_of(r["op"])] = groups.get(group_of(r["op"]), 0.0) + r["self_ms"]
    name = "torchvision retinanet_resnet50_fpn" if args.torchvision else args.model
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{name} @{args.image_size}, batch {args.batch}, {torch.get_num_threads()} threads: "
          f"{total / 1e3 / args.steps:.0f} ms self CPU time per step (sum over ops); process so far: "
          f"user {usage.ru_utime:.1f} s, system {usage.ru_stime:.1f} s, {usage.ru_minflt} minor page faults")
    print(f"{'op':<48}{'self ms':>10}{'share':>8}{'calls':>7}")
    for r in rows[:args.top]:
        print(f"{r['op'][:47]:<48}{r['self_ms']:>10.1f}{r['share']:>8.1%}{r['calls']:>7}")
    print("regions (inclusive CPU ms):", {k: round(v, 1) for k, v in regions.items()})
    print("by part:", {k: round(v, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])})
    if args.json:
        Path(args.json).write_text(json.dumps({"model": name, "image_size": args.image_size, "batch": args.batch,
                                               "threads": torch.get_num_threads(), "top": rows[:args.top],
                                               "regions_ms": regions, "parts_ms": groups,
                                               "total_self_ms": total / 1e3 / args.steps, "malloc": args.malloc,
                                               "user_s": usage.ru_utime, "system_s": usage.ru_stime,
                                               "minor_faults": usage.ru_minflt}, indent=1))


if __name__ == "__main__":
    main()
