"""``scaledet benchmark``: the JSON keys exist and hang together; bad combinations are refused."""
from __future__ import annotations

import json

import pytest

from scaledet.cli.main import main

KEYS = ("p50_ms", "p90_ms", "images_per_s", "peak_memory_mb", "params", "macs", "gflops_per_s")
TINY = ["retinanet_spinenet49_tiny", "--image-size", "128", "--num-classes", "3", "--iters", "3", "--warmup", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _bench(capsys, *extra: str) -> dict:
    assert main(["benchmark", *TINY, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("extra, mode, factor", [
    ((), "inference", 1),
    (("--train", "--batch", "2"), "train", 3),
    (("--backend", "onnxruntime"), "inference", 1),
])
def test_json_report(capsys, extra, mode, factor):
    result = _bench(capsys, *extra)
    assert all(key in result for key in KEYS)
    assert result["mode"] == mode and result["image_size"] == 128
    assert 0 < result["p50_ms"] <= result["p90_ms"]
    assert result["images_per_s"] == pytest.approx(1e3 * result["batch"] / result["p50_ms"])
    assert result["gflops_per_s"] == pytest.approx(2 * factor * result["macs"] * result["images_per_s"] / 1e9)
    assert result["params"] > 1e5 and result["macs"] > 1e7 and result["peak_memory_mb"] > 10
    assert len(result["loadavg"]) == 3


def test_text_report(capsys):
    assert main(["benchmark", *TINY]) == 0
    out = capsys.readouterr().out
    assert "p50" in out and "images/s" in out and "GFLOP/s" in out and "peak RSS" in out


@pytest.mark.parametrize("extra, message", [
    (("--backend", "onnxruntime", "--train"), "CPU fp32 inference only"),
    (("--iters", "0"), "--iters >= 1"),
])
def test_bad_combinations(capsys, extra, message):
    assert main(["benchmark", *TINY, *extra]) == 1
    assert message in capsys.readouterr().err
