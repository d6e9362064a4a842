"""scaledet's retinanet_resnet50_fpn against torchvision's, same weights, same input, paired.

Both models have the same architecture and weights (ours converted from torchvision's).

``--part inference`` (batch 1, 640 x 640):
- *torchvision*: its whole ``model([image])`` (its normalisation, resize - a no-op size here -
  network and post-processing) under ``torch.inference_mode``;
- *scaledet deploy*: ``optimized_for_inference()`` (BatchNorm folded, channels-last, wide 3x3
  convolutions by Winograd F(4x4, 3x3)), forward + post-processing on the normalised image;
- *scaledet predict*: the plain Python API, ``model.eval().predict(image, image_size=640)`` on
  the decoded uint8 image (pre-processing, network, post-processing, detections in image pixels);
- *scaledet ONNX Runtime fp32*: the same weights exported by ``scaledet export`` (BatchNorm folded,
  post-processing and NMS in the graph), run by ONNX Runtime on the normalised image: the
  deployment path off PyTorch (exported once, before the timed processes);
- *scaledet deploy bf16*: ``optimized_for_inference(precision="bf16")``, the deployment copy in
  bfloat16 (not fp32 arithmetic: a separate figure, with no target; fast on AMX / AVX-512 BF16).

``--part training`` (batch 2): one step = forward + loss + backward + SGD step with the same
random targets, both from scratch (trainable BatchNorm, all stages). torchvision runs as its
reference recipe does (``torch.optim.SGD`` defaults, NCHW); scaledet runs as its trainer does
(channels-last, Winograd for wide 3x3 convolutions on large maps, the trainer's optimiser
construction). *scaledet train step bf16* is the same step as the trainer runs it with
``train.amp=bf16`` (the forward under CPU autocast), again a separate figure with no target.

The *direct conv* rows are the same deployment copy and training step with Winograd off
(``optimized_for_inference(winograd=False)``, ``train.winograd=false``): the effect of that one
change, measured in the same processes.

    python benchmarks/bench_retinanet_vs_torchvision.py --part inference
    python benchmarks/bench_retinanet_vs_torchvision.py --part training
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from _harness import Bench, Ratio, main
from scaledet.models.convert import torchvision_retinanet_checkpoint
from scaledet.registry import create_model
from scaledet.utils.benchmark import random_targets

TV, DEPLOY, PREDICT = "torchvision inference", "scaledet deploy inference", "scaledet predict"
TV_TRAIN, TRAIN = "torchvision train step", "scaledet train step"
DEPLOY_BF16, TRAIN_BF16 = "scaledet deploy bf16", "scaledet train step bf16"
DEPLOY_DIRECT, TRAIN_DIRECT = "scaledet deploy, direct conv", "scaledet train step, direct conv"
ORT = "scaledet ONNX Runtime fp32"


def build_pair(size: int, train: bool):
    torch.manual_seed(0)
    tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None,
                                                             min_size=size, max_size=size)
    checkpoint = torchvision_retinanet_checkpoint(tv.state_dict(), verify=False)
    ours = create_model("retinanet_resnet50_fpn", **checkpoint["model_args"], frozen_bn=not train,
                        trainable_layers=5 if train else 3)
    ours.load_state_dict(checkpoint["model"])
    return tv, ours


def onnx_path(args) -> Path:
    return Path(args.workdir) / "retinanet_resnet50_fpn.onnx"


def prepare(args) -> None:
    if args.part in ("inference", "both"):
        from scaledet.export.onnx import export_onnx

        export_onnx(build_pair(args.size, train=False)[1].eval(), onnx_path(args), image_size=args.size)


def inference_variants(size: int, onnx: Path, threads: int) -> dict:
    from scaledet.export.onnx import ort_session, run_onnx

    tv, ours = build_pair(size, train=False)
    tv.eval()
    ours.eval()
    image_u8 = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    image = image_u8.float() / 255
    mean = torch.tensor(ours.pixel_mean)[:, None, None]
    std = torch.tensor(ours.pixel_std)[:, None, None]
    deploy = ours.optimized_for_inference()
    deploy_direct = ours.optimized_for_inference(winograd=False)
    deploy_bf16 = ours.optimized_for_inference(precision="bf16")
    session = ort_session(onnx, threads=threads, spin=False)
    sizes = torch.tensor([[size, size]])

    def run_tv():
        with torch.inference_mode():
            return tv([image])

    def run_copy(network):
        with torch.inference_mode():
            x = ((image - mean) / std)[None].contiguous(memory_format=torch.channels_last)
            return network.postprocess(network(x), [(size, size)])

    def run_predict():
        return ours.predict(image_u8, image_size=size)

    def run_onnxruntime():
        return run_onnx(session, ((image - mean) / std)[None], sizes)

    return {TV: run_tv, DEPLOY: lambda: run_copy(deploy), PREDICT: run_predict, ORT: run_onnxruntime,
            DEPLOY_BF16: lambda: run_copy(deploy_bf16), DEPLOY_DIRECT: lambda: run_copy(deploy_direct)}


def training_variants(size: int, batch: int = 2) -> dict:
    from scaledet.engine.trainer import apply_compute_settings, build_optimizer
    from scaledet.config import load_config

    tv, ours = build_pair(size, train=True)
    ours_direct = build_pair(size, train=True)[1]
    tv.train()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    targets = random_targets(batch, size, 91, seed=0)
    for t in targets:
        t["labels"] = t["labels"].clamp(min=1)  # torchvision reserves 0 for the background
    mean = torch.tensor(ours.pixel_mean)[:, None, None]
    std = torch.tensor(ours.pixel_std)[:, None, None]
    tv_opt = torch.optim.SGD(tv.parameters(), lr=1e-3, momentum=0.9)
    cfg = load_config(None, ["optim.lr=0.001", "optim.momentum=0.9", "optim.weight_decay=0.0"])

    def step_tv():
        losses = tv(list(images), targets)
        loss = sum(losses.values())
        tv_opt.zero_grad()
        loss.backward()
        tv_opt.step()

    def trainer_step(model, cfg):
        """One step as the trainer runs it: its optimiser and compute settings (channels-last,
        Winograd where it applies; fp32 only, so not under autocast)."""
        model.train()
        optimizer = build_optimizer(model, cfg)
        apply_compute_settings(model, cfg)
        device = next(model.parameters()).device

        def step(amp: bool = False):
            optimizer.zero_grad(set_to_none=True)
            x = ((images - mean) / std).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):  # as the trainer's train.amp
                outputs = model(x)
            loss = model.loss(outputs, targets, [(size, size)] * batch)["loss"]
            loss.backward()
            optimizer.step()
        return step

    step_ours = trainer_step(ours, cfg)
    return {TV_TRAIN: step_tv, TRAIN: step_ours, TRAIN_BF16: lambda: step_ours(amp=True),
            TRAIN_DIRECT: trainer_step(ours_direct, cfg.replace(["train.winograd=false"]))}


def variants(args) -> dict:
    built = {}
    if args.part in ("inference", "both"):
        built.update(inference_variants(args.size, onnx_path(args), args.threads))
    if args.part in ("training", "both"):
        built.update(training_variants(args.size))
    return built


def add_arguments(p) -> None:
    p.add_argument("--part", choices=["inference", "training", "both"], default="both")
    p.add_argument("--size", type=int, default=640)


BENCH = Bench(
    "retinanet_vs_torchvision", __doc__, variants=variants, prepare=prepare, add_arguments=add_arguments,
    ratios=[Ratio("deploy inference / torchvision", DEPLOY, TV, 0.75),
            Ratio("plain predict / torchvision", PREDICT, TV, 0.85),
            Ratio("train step / torchvision", TRAIN, TV_TRAIN, 0.85),
            Ratio("ONNX Runtime fp32 / torchvision", ORT, TV),
            Ratio("deploy bf16 / torchvision fp32", DEPLOY_BF16, TV),
            Ratio("train step bf16 / torchvision fp32", TRAIN_BF16, TV_TRAIN),
            Ratio("deploy, direct conv / torchvision", DEPLOY_DIRECT, TV),
            Ratio("train step, direct conv / torchvision", TRAIN_DIRECT, TV_TRAIN),
            Ratio("deploy Winograd / direct conv", DEPLOY, DEPLOY_DIRECT),
            Ratio("train step Winograd / direct conv", TRAIN, TRAIN_DIRECT)],
    quick={"size": 128})

if __name__ == "__main__":
    main(BENCH)
