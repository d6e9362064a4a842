"""``torch.compile`` (inductor) against eager for the network forward; post-processing stays
eager (its data-dependent NMS would break the graph anyway). The first (compiling) call is a
warm-up call and its time is kept in the record, with the largest box-delta difference.

    python benchmarks/bench_compile.py [--model retinanet_spinenet49_tiny --image-size 256] [--mode max-autotune]
"""
from __future__ import annotations

import time

import torch

from _bench_args import add_model_arguments, inference_setup
from _harness import Bench, Ratio, main

EAGER, COMPILED = "eager", "torch.compile"


def variants(args):
    model, x, sizes = inference_setup(args)
    compiled = torch.compile(model, mode=args.mode)

    def run(forward):
        def call():
            with torch.inference_mode():
                return model.postprocess(forward(x), sizes)
        return call

    start = time.perf_counter()
    run(compiled)()
    compile_s = time.perf_counter() - start
    with torch.inference_mode():
        err = max(float((a - b).abs().max()) for a, b in zip(model(x)["box_deltas"], compiled(x)["box_deltas"]))
    return {EAGER: run(model), COMPILED: run(compiled)}, {"first_call_s": compile_s, "max_abs_box_delta_diff": err}


def add_arguments(p) -> None:
    add_model_arguments(p, model="retinanet_spinenet49_tiny", image_size=256)
    p.add_argument("--mode", default=None, help="torch.compile mode (default / reduce-overhead / max-autotune)")


BENCH = Bench("compile", __doc__, variants=variants, add_arguments=add_arguments,
              ratios=[Ratio("compiled / eager", COMPILED, EAGER)], quick={"image_size": 128})

if __name__ == "__main__":
    main(BENCH)
