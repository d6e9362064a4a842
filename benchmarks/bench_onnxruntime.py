"""ONNX Runtime on our export vs eager PyTorch (forward + post-processing), same threads.
Target: ORT latency <= 0.7x eager for retinanet_spinenet49s at 640, batch 1."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from _bench_args import inference_setup, done, measure, parser, ratio, setup
from scaledet.export.fuse import fuse_conv_bn
from scaledet.export.onnx import export_onnx, ort_session

args = parser(__doc__).parse_args()
setup(args)
model, x, sizes = inference_setup(args)


def run(m):
    with torch.inference_mode():
        return m.postprocess(m(x), sizes)


eager = measure("eager PyTorch", lambda: run(model), args)
fused = fuse_conv_bn(model)
eager_fused = measure("eager PyTorch, BN folded", lambda: run(fused), args)
with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    path = export_onnx(model, Path(tmp) / "m.onnx", image_size=args.image_size, batch_size=args.batch)
    print(f"export + ORT check took {time.perf_counter() - start:.1f} s")
    session = ort_session(path, threads=args.threads)
    feed = {"images": x.numpy(), "image_sizes": sizes.numpy()}
    ort_stats = measure("ONNX Runtime (CPU EP)", lambda: session.run(None, feed), args)
r = ratio("ORT vs eager", eager, ort_stats)
ratio("ORT vs eager with BN folded", eager_fused, ort_stats)
print("target ORT <= 0.7x eager:", "met" if r <= 0.7 else "NOT met")
done({"bench": "onnxruntime", "ratio": r, "target_met": r <= 0.7})
