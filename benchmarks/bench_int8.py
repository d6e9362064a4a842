"""int8 ONNX Runtime (static QDQ quantisation) against fp32 ONNX Runtime and our eager PyTorch.

Target: int8 ONNX Runtime <= 0.5x our eager fp32 time (retinanet_spinenet49s at 640, batch 1).
Before the timed processes start, the model is exported once to fp32 ONNX and quantised with
``scaledet.export.quantize`` on real calibration images (``--calibration``: a folder or a
config; default the coco_tiny training images of the shared test data, else generated shapes).

With random weights (the default) there is no accuracy to protect, so every network node is
quantised (``--max-fallback 0``). With ``--checkpoint`` and ``--config``, the sensitivity pass
chooses the fp32 fall-back and the COCO AP of the fp32 and int8 files on the config's
validation split is measured (once; it does not vary between runs) and reported:

    python benchmarks/bench_int8.py
    python benchmarks/bench_int8.py --checkpoint scaledet_demo/run/last.pt --config scaledet_demo/run/config.yaml \\
        --image-size 256 --max-fallback 6
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from _bench_args import add_model_arguments, build_model, inference_call, inference_setup
from _harness import Bench, Ratio, main

EAGER, DEPLOY, ORT32, ORT8 = "eager PyTorch fp32", "eager PyTorch deploy fp32", "ONNX Runtime fp32", "ONNX Runtime int8"
SHARED_COCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco_tiny" / "train2017"


def default_calibration(workdir: Path) -> Path:
    if SHARED_COCO.is_dir():
        return SHARED_COCO
    from scaledet.data.synthetic import make_synthetic_coco

    return make_synthetic_coco(workdir / "shapes", num_train=32, num_val=1, image_size=512, seed=0).train_images


def prepare(args) -> None:
    from scaledet.export.onnx_eval import evaluate_onnx_coco
    from scaledet.export.quantize import export_int8

    work = Path(args.workdir)
    model = build_model(args)
    calibration = args.calibration or (args.config if args.checkpoint and args.config else None) \
        or default_calibration(work)
    _, report = export_int8(model, work / "int8.onnx", image_size=args.image_size, batch_size=args.batch,
                            calibration=calibration, fp32_path=work / "fp32.onnx",
                            num_calibration=args.calibration_images, max_fallback=args.max_fallback,
                            threads=args.threads)
    facts = {"int8": {k: v for k, v in vars(report).items() if k not in ("fp32_nodes",)}}
    if args.config:
        facts["accuracy"] = {name: evaluate_onnx_coco(work / f"{name}.onnx", args.config, threads=args.threads)
                             for name in ("fp32", "int8")}
        fp32, int8 = facts["accuracy"]["fp32"], facts["accuracy"]["int8"]
        print(f"COCO on {args.config}: fp32 AP {fp32['AP']:.4f} AP50 {fp32['AP50']:.4f}; "
              f"int8 AP {int8['AP']:.4f} AP50 {int8['AP50']:.4f} "
              f"(differences {int8['AP'] - fp32['AP']:+.4f}, {int8['AP50'] - fp32['AP50']:+.4f})")
    (work / "facts.json").write_text(json.dumps(facts, default=str))


def variants(args):
    from scaledet.export.onnx import ort_session

    work = Path(args.workdir)
    model, x, sizes = inference_setup(args)
    deploy = model.optimized_for_inference()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    built = {EAGER: inference_call(model, x, sizes), DEPLOY: inference_call(deploy, x_cl, sizes)}
    for name, file in ((ORT32, "fp32.onnx"), (ORT8, "int8.onnx")):
        session = ort_session(work / file, threads=args.threads, spin=False)
        feed = {i.name: {"images": x.numpy(), "image_sizes": sizes.numpy()}[i.name] for i in session.get_inputs()}
        built[name] = (lambda s, f: lambda: s.run(None, f))(session, feed)
    return built, json.loads((work / "facts.json").read_text())


def add_arguments(p) -> None:
    add_model_arguments(p, checkpoint=True)
    p.add_argument("--config", default=None, help="with --checkpoint: evaluate COCO AP on its validation split")
    p.add_argument("--calibration", default=None, help="calibration images: folder or config")
    p.add_argument("--calibration-images", type=int, default=32)
    p.add_argument("--max-fallback", type=int, default=0, help="layer groups the sensitivity pass may keep fp32")


BENCH = Bench("int8", __doc__, variants=variants, prepare=prepare, add_arguments=add_arguments,
              ratios=[Ratio("ORT int8 / eager fp32", ORT8, EAGER, 0.5), Ratio("ORT int8 / eager deploy", ORT8, DEPLOY),
                      Ratio("ORT int8 / ORT fp32", ORT8, ORT32)],
              quick={"model": "retinanet_spinenet49_tiny", "image_size": 128, "calibration_images": 4})

if __name__ == "__main__":
    main(BENCH)
