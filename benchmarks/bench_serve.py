"""Requests/s and p50/p99 latency of `scaledet serve` on loopback at 1, 4 and 16 concurrent
clients, dynamic batching on (``--max-batch 16 --max-wait-ms 10``) against off (``--max-batch 1``).

    python benchmarks/bench_serve.py [--rounds 3] [--seconds 10] [--threads 1] [--image photo.jpg]

The model is a tiny random SpineNet-49 RetinaNet (``retinanet_spinenet49_tiny``, 256 px, 80 classes,
class predictor drawn wide enough that about 2,000 (anchor, class) pairs of the test image pass the
0.05 score threshold, so NMS and the 100 detections per image are exercised). Each round starts a
fresh server process per mode, in alternating order, and drives it with client threads (one
keep-alive connection each), posting the same 640x480 JPEG; responses in the first ``--warmup``
seconds of each level are not counted. Printed: the median and [min-max] over rounds of requests/s,
latency and the server's CPU time per request, and the on/off ratios at 16 clients. Clients and
server share the machine's cores; on a busy machine the CPU time per request is the steadier
figure (wall time includes waiting for a core).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image, ImageDraw

from scaledet.engine.checkpoint import FORMAT, save_atomic
from scaledet.registry import create_model
from scaledet.utils.benchmark import machine_note, percentile

MODES = {"off": ["--max-batch", "1"], "on": ["--max-batch", "16", "--max-wait-ms", "10"]}
LEVELS = (1, 4, 16)


def write_checkpoint(path: Path) -> Path:
    args = {"num_classes": 80, "head_width": 32, "endpoints_num_filters": 32}
    torch.manual_seed(0)
    model = create_model("retinanet_spinenet49_tiny", **args)
    with torch.no_grad():
        model.head.cls_tower.predictor.weight.normal_(0.0, 10.0)
    return save_atomic({"format": FORMAT, "model": model.state_dict(), "model_name": "retinanet_spinenet49_tiny",
                        "model_args": args}, path)


def test_image() -> bytes:
    rng = np.random.default_rng(0)
    image = Image.new("RGB", (640, 480), (90, 120, 150))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, 560), rng.integers(0, 400)
        w, h = rng.integers(30, 200, 2)
        draw.ellipse((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def start_server(checkpoint: Path, mode: str, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    out = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "scaledet.cli.main", "serve", "--checkpoint", str(checkpoint),
                             "--port", "0", "--threads", str(threads), "--no-access-log", *MODES[mode]],
                            stdout=out, stderr=subprocess.STDOUT)
    out.close()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"on (http://\S+)", log.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(url: str, server_pid: int, image: bytes, clients: int, warmup: float, seconds: float) -> dict:
    """``clients`` threads post ``image`` in a loop; the responses that arrive inside the measured
    window count, for throughput and for latency. The server's CPU time over the same window,
    per response, is the figure that waiting for a shared core does not inflate."""
    start = time.monotonic() + warmup
    stop = start + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                sent = time.monotonic()
                if sent >= stop:
                    return
                response = http.post("/v1/predict", content=image)
                done = time.monotonic()
                if response.status_code != 200:
                    failures[index] += 1
                elif start <= done <= stop:
                    latencies[index].append(done - sent)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(max(start - time.monotonic(), 0))
    cpu_start = cpu_seconds(server_pid)
    time.sleep(max(stop - time.monotonic(), 0))
    cpu = cpu_seconds(server_pid) - cpu_start
    for thread in threads:
        thread.join()
    flat = [t for per in latencies for t in per]
    return {"rps": len(flat) / seconds, "p50_ms": percentile(flat, 50) * 1e3, "p99_ms": percentile(flat, 99) * 1e3,
            "cpu_ms": cpu * 1e3 / max(len(flat), 1), "requests": len(flat), "failures": sum(failures)}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}-{max(values):.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="separate server runs per mode (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds per level (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="server's intra-op threads (default 1)")
    parser.add_argument("--image", type=Path, default=None, help="JPEG/PNG to post (default: a generated 640x480)")
    args = parser.parse_args()
    image = args.image.read_bytes() if args.image else test_image()
    print(f"# {machine_note()}; server intra-op threads {args.threads}; client threads = clients", flush=True)
    runs: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_checkpoint(Path(tmp) / "tiny.pt")
        for round_index in range(args.rounds):
            for mode in (list(MODES) if round_index % 2 == 0 else list(MODES)[::-1]):
                proc, url = start_server(checkpoint, mode, args.threads, Path(tmp) / f"{mode}{round_index}.log")
                try:
                    for clients in LEVELS:
                        stats = drive(url, proc.pid, image, clients, args.warmup, args.seconds)
                        runs.setdefault((mode, clients), []).append(stats)
                        print(f"round {round_index + 1} batching {mode:<3} {clients:2d} clients: "
                              f"{stats['rps']:6.1f} req/s  p50 {stats['p50_ms']:7.1f} ms  p99 {stats['p99_ms']:7.1f} ms"
                              f"  server CPU {stats['cpu_ms']:6.1f} ms/request  ({stats['requests']} requests, "
                              f"{stats['failures']} failed)", flush=True)
                finally:
                    proc.terminate()
                    proc.wait(120)
    print(f"\nmedian [min-max] over {args.rounds} rounds")
    print(f"{'batching':<9}{'clients':>8}  {'req/s':>20}  {'p50 ms':>22}  {'p99 ms':>22}  {'server CPU ms/req':>22}")
    for (mode, clients), stats in sorted(runs.items()):
        print(f"{mode:<9}{clients:>8}  {spread([s['rps'] for s in stats]):>20}  "
              f"{spread([s['p50_ms'] for s in stats]):>22}  {spread([s['p99_ms'] for s in stats]):>22}  "
              f"{spread([s['cpu_ms'] for s in stats]):>22}")
    ratios = [on["rps"] / off["rps"] for on, off in zip(runs[("on", 16)], runs[("off", 16)])]
    cpu_ratios = [on["cpu_ms"] / off["cpu_ms"] for on, off in zip(runs[("on", 16)], runs[("off", 16)])]
    print(f"\nat 16 clients, batching on / off: throughput x{statistics.median(ratios):.2f} "
          f"[{min(ratios):.2f}-{max(ratios):.2f}], server CPU per request x{statistics.median(cpu_ratios):.2f} "
          f"[{min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}]")
    print("# " + json.dumps({"ratio_16": ratios, "cpu_ratio_16": cpu_ratios, **machine_note(),
                             "server_threads": args.threads,
                             "runs": {f"{m}/{c}": s for (m, c), s in runs.items()}}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
