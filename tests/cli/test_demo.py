"""`scaledet demo` as a new user runs it: under 10 minutes on the CPU, AP50 >= 0.8; then its
model evaluated in bf16 keeps its accuracy (issue 18's bounds: AP within 0.015, AP50 within 0.01)."""
import json
import subprocess
import sys
import time

import pytest


@pytest.mark.slow
def test_demo_finishes_in_ten_minutes_with_ap50_above_0_8(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "scaledet.cli.main", "demo", "--output", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    print(f"\nscaledet demo: {elapsed:.0f} s, AP50 {summary['AP50']:.3f}, AP {summary['AP']:.3f}")
    assert "Average Precision" in proc.stdout and "predictions" in proc.stdout
    closing = proc.stdout.split("Done in")[-1]
    for plot in ("curves.png", "pr_curves.png"):
        assert str(tmp_path / "demo" / "run" / plot) in closing and (tmp_path / "demo" / "run" / plot).is_file()
    assert len(list((tmp_path / "demo" / "predictions").glob("*.png"))) == 8
    assert summary["AP50"] >= 0.8
    assert elapsed < 600
    checkpoint, config = tmp_path / "demo" / "run" / "best.pt", tmp_path / "demo" / "run" / "config.yaml"
    metrics = {}
    for precision in ("fp32", "bf16"):
        ran = subprocess.run([sys.executable, "-m", "scaledet.cli.main", "eval", str(config), "--checkpoint",
                              str(checkpoint), "--precision", precision, "--json",
                              "--output", str(tmp_path / precision)], capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stderr[-2000:]
        metrics[precision] = json.loads(ran.stdout)
    print(f"demo model AP fp32 {metrics['fp32']['AP']:.4f} bf16 {metrics['bf16']['AP']:.4f}, "
          f"AP50 fp32 {metrics['fp32']['AP50']:.4f} bf16 {metrics['bf16']['AP50']:.4f}")
    assert metrics["fp32"]["AP50"] >= 0.8
    assert abs(metrics["bf16"]["AP"] - metrics["fp32"]["AP"]) <= 0.015
    assert abs(metrics["bf16"]["AP50"] - metrics["fp32"]["AP50"]) <= 0.01
