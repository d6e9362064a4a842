"""torch.compile (inductor) vs eager for the network forward; post-processing stays eager
(its data-dependent NMS would break the graph anyway). Compile time is reported separately."""
from __future__ import annotations

import time

import torch

from _bench_args import inference_setup, done, measure, parser, ratio, setup

p = parser(__doc__, model="retinanet_spinenet49_tiny", image_size=256, iters=5)
p.add_argument("--mode", default=None, help="torch.compile mode (default / reduce-overhead / max-autotune)")
args = p.parse_args()
setup(args)
model, x, sizes = inference_setup(args)
compiled = torch.compile(model, mode=args.mode)


def run(forward):
    with torch.inference_mode():
        return model.postprocess(forward(x), sizes)


before = measure("eager", lambda: run(model), args)
start = time.perf_counter()
run(compiled)
print(f"first compiled call (compilation) took {time.perf_counter() - start:.1f} s")
after = measure(f"torch.compile(mode={args.mode})", lambda: run(compiled), args)
with torch.inference_mode():
    err = max(float((a - b).abs().max()) for a, b in zip(model(x)["box_deltas"], compiled(x)["box_deltas"]))
print(f"max |box delta difference| = {err:.2e}")
done({"bench": "compile", "ratio": ratio("compiled vs eager", before, after)})
