"""ONNX Runtime (CPU) on our export against our eager PyTorch, forward + post-processing, same threads.

Target: ONNX Runtime <= 0.7x our eager time for retinanet_spinenet49s at 640, batch 1. *eager*
is the model as built (``model.eval()``, BatchNorm as separate ops); *eager deploy* is
``optimized_for_inference()`` (BatchNorm folded, channels-last), which ``predict`` now uses.
The model is exported (and checked against PyTorch) once, before the timed processes start.

    python benchmarks/bench_onnxruntime.py [--model retinanet_spinenet49s --image-size 640]
"""
from __future__ import annotations

from pathlib import Path

import torch

from _bench_args import add_model_arguments, build_model, inference_call, inference_setup
from _harness import Bench, Ratio, main

EAGER, DEPLOY, ORT = "eager PyTorch", "eager PyTorch deploy (BN folded, channels-last)", "ONNX Runtime fp32"


def onnx_path(args) -> Path:
    return Path(args.workdir) / "model.onnx"


def prepare(args) -> None:
    from scaledet.export.onnx import export_onnx

    export_onnx(build_model(args), onnx_path(args), image_size=args.image_size, batch_size=args.batch)


def variants(args) -> dict:
    from scaledet.export.onnx import ort_session

    model, x, sizes = inference_setup(args)
    deploy = model.optimized_for_inference()
    session = ort_session(onnx_path(args), threads=args.threads, spin=False)
    feed = {i.name: {"images": x.numpy(), "image_sizes": sizes.numpy()}[i.name] for i in session.get_inputs()}
    x_cl = x.contiguous(memory_format=torch.channels_last)
    return {EAGER: inference_call(model, x, sizes), DEPLOY: inference_call(deploy, x_cl, sizes),
            ORT: lambda: session.run(None, feed)}


BENCH = Bench("onnxruntime", __doc__, variants=variants, prepare=prepare, add_arguments=add_model_arguments,
              ratios=[Ratio("ORT fp32 / eager", ORT, EAGER, 0.7), Ratio("ORT fp32 / eager deploy", ORT, DEPLOY)],
              quick={"model": "retinanet_spinenet49_tiny", "image_size": 128})

if __name__ == "__main__":
    main(BENCH)
