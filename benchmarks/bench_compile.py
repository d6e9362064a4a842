"""torch.compile (inductor) vs eager for the network forward; post-processing stays eager
(its data-dependent NMS would break the graph anyway). Compile time is reported separately."""
from __future__ import annotations

import time

import torch

from _bench_args import done, measure, parser, ratio, setup
from scaledet.registry import create_model

p = parser(__doc__, model="retinanet_spinenet49_tiny", image_size=256, iters=5)
p.add_argument("--mode", default=None, help="torch.compile mode (default / reduce-overhead / max-autotune)")
args = p.parse_args()
setup(args)
torch.manual_seed(0)
model = create_model(args.model).eval()
x = torch.randn(args.batch, 3, args.image_size, args.image_size)
sizes = torch.tensor([[args.image_size] * 2] * args.batch)
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
