"""`scaledet serve` as a command: one-line errors, loopback by default, graceful SIGTERM."""
from __future__ import annotations

import io
import socket
import threading
import time

import httpx
import pytest
from PIL import Image

from scaledet.cli.main import main
from scaledet.cli.serve import is_loopback


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["serve", *args])
    return code, capsys.readouterr().err.strip()


def test_cli_errors_are_one_line(capsys, tmp_path, tiny_checkpoint):
    cases = [
        (["--checkpoint", str(tmp_path / "missing.pt"), "--port", "0"], "checkpoint not found"),
        (["--checkpoint", str(tiny_checkpoint), "--backend", "onnxruntime", "--port", "0"], "give --onnx"),
        (["--onnx", str(tmp_path / "missing.onnx"), "--port", "0"], "ONNX model not found"),
        (["--checkpoint", str(tiny_checkpoint), "--max-batch", "0"], "--max-batch must be positive"),
        (["--checkpoint", str(tiny_checkpoint), "--max-wait-ms", "-1"], "--max-wait-ms must not be negative"),
        (["--checkpoint", str(tiny_checkpoint), "--host", "no-such-host.invalid"], "cannot resolve"),
    ]
    for args, words in cases:
        code, err = run_cli(capsys, *args)
        assert code == 1 and err.startswith("scaledet serve: error: ") and words in err and "\n" not in err, err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, err = run_cli(capsys, "--checkpoint", str(tiny_checkpoint), "--port", str(busy.getsockname()[1]))
    assert code == 1 and "cannot listen on 127.0.0.1:" in err


def test_loopback_is_the_default_and_anything_else_is_flagged(capsys):
    from scaledet.cli.main import build_parser

    args = build_parser().parse_args(["serve", "--checkpoint", "x.pt"])
    assert args.host == "127.0.0.1" and is_loopback(args.host)
    assert is_loopback("::1") and not is_loopback("0.0.0.0") and not is_loopback("::")
    assert not is_loopback("192.168.1.20")


def test_sigterm_lets_the_request_in_flight_finish(start_server, tiny_checkpoint):
    # A 3 s gathering window holds a lone request in flight long enough to signal the server.
    server = start_server("--checkpoint", str(tiny_checkpoint), "--threads", "1", "--max-batch", "8",
                          "--max-wait-ms", "3000")
    buffer = io.BytesIO()
    Image.new("RGB", (200, 150), (30, 120, 200)).save(buffer, format="PNG")
    responses: list[tuple[httpx.Response, float]] = []
    sender = threading.Thread(target=lambda: responses.append(
        (httpx.post(server.url + "/v1/predict", content=buffer.getvalue(), timeout=120), time.monotonic())))
    sender.start()
    deadline = time.monotonic() + 30
    while httpx.get(server.url + "/healthz").json()["predictions_in_flight"] == 0:
        assert time.monotonic() < deadline, "the request never reached the queue"
        time.sleep(0.05)
    signalled = time.monotonic()
    assert server.terminate() == 0, server.output()
    sender.join(60)
    assert responses, "no response"
    response, answered = responses[0]
    assert response.status_code == 200 and response.json()["image"] == {"width": 200, "height": 150}
    assert answered > signalled  # it was still in flight when SIGTERM came
    assert "stopped on SIGTERM" in server.output()
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/healthz", timeout=5)
