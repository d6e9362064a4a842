"""The machine's own fp32 matmul rate (2048^2 sgemm) and a detector's inference rate as a
fraction of it (2 x multiply-adds x images/s)."""
from __future__ import annotations

import torch

from _bench_args import done, measure, parser, setup
from scaledet.registry import create_model
from scaledet.utils.flops import count_macs

p = parser(__doc__)
p.add_argument("--n", type=int, default=2048)
args = p.parse_args()
setup(args)
a, b = torch.randn(args.n, args.n), torch.randn(args.n, args.n)
mm = measure(f"sgemm {args.n}x{args.n}", lambda: a @ b, args, batch=1)
peak = 2 * args.n ** 3 / (mm["p50_ms"] / 1e3) / 1e9
peak_cpu = 2 * args.n ** 3 / (mm["cpu_p50_ms"] / 1e3) / 1e9
print(f"matmul: {peak:.1f} GFLOP/s wall, {peak_cpu:.1f} GFLOP/s per CPU-second, {args.threads} thread(s)")
torch.manual_seed(0)
model = create_model(args.model).eval()
macs = count_macs(model, args.image_size)
x = torch.randn(args.batch, 3, args.image_size, args.image_size)
sizes = torch.tensor([[args.image_size] * 2] * args.batch)


def run():
    with torch.inference_mode():
        return model.postprocess(model(x), sizes)


det = measure(f"{args.model} @{args.image_size}", run, args)
achieved = 2 * macs * det["images_per_s"] / 1e9
achieved_cpu = 2 * macs * args.batch / (det["cpu_p50_ms"] / 1e3) / 1e9
print(f"{args.model}: {macs / 1e9:.1f} G multiply-adds/image -> {achieved:.1f} GFLOP/s wall = "
      f"{achieved / peak:.1%} of the matmul rate; per CPU-second {achieved_cpu:.1f} = {achieved_cpu / peak_cpu:.1%}")
done({"bench": "matmul_peak", "sgemm_gflops": peak, "sgemm_gflops_cpu": peak_cpu, "model_gflops": achieved,
      "model_gflops_cpu": achieved_cpu, "fraction": achieved / peak, "fraction_cpu": achieved_cpu / peak_cpu})
