"""A tiny random detector saved as a scaledet checkpoint, and `scaledet serve` processes on loopback."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from scaledet.engine.checkpoint import FORMAT, save_atomic
from scaledet.registry import create_model

REPO = Path(__file__).resolve().parents[2]
TINY_NAME = "retinanet_spinenet49_tiny"
TINY_ARGS = dict(num_classes=3, head_width=32, endpoints_num_filters=32, max_detections=10, score_threshold=0.05)
CLASS_NAMES = ["circle", "square", "triangle"]
READY = re.compile(r"on (http://\S+)")


def tiny_detector() -> torch.nn.Module:
    """Random weights, with the box and class predictors drawn wide enough that every image gets
    a few well-separated boxes with distinct scores (at the default init all scores are ~0.01)."""
    torch.manual_seed(0)
    model = create_model(TINY_NAME, **TINY_ARGS)
    with torch.no_grad():
        model.head.cls_tower.predictor.weight.normal_(0.0, 30.0)
        model.head.box_tower.predictor.weight.normal_(0.0, 2.0)
    model.class_names = list(CLASS_NAMES)
    return model.eval()


@pytest.fixture(autouse=True)
def single_intra_op_thread():
    """The in-process model runs here, like the served ones, on one intra-op thread: on the shared
    2-core machine two threads stall on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "tiny.pt"
    model = tiny_detector()
    save_atomic({"format": FORMAT, "model": model.state_dict(), "model_name": TINY_NAME, "model_args": TINY_ARGS,
                 "class_names": CLASS_NAMES}, path)
    return path


class ServeProcess:
    """``scaledet serve ... --port 0`` in a subprocess; ``url`` once it answers /healthz."""

    def __init__(self, args: list[str], log: Path, ready_timeout: float = 180.0):
        self.log = log
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "scaledet.cli.main", "serve", *args, "--port", "0"],
                                         cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.url = self._wait_ready(ready_timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scaledet serve exited with {self.proc.returncode}:\n{self.output()}")
            found = READY.search(self.output())
            if found:
                try:
                    if httpx.get(found.group(1) + "/healthz", timeout=5).status_code == 200:
                        return found.group(1)
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"scaledet serve did not answer within {timeout} s:\n{self.output()}")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code once it has shut down."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """``start_server(*args)`` -> a running :class:`ServeProcess`; any left running are killed at the end."""
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        process = ServeProcess(list(args), tmp_path_factory.mktemp("serve-log") / "serve.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture(scope="session")
def server(start_server, tiny_checkpoint):
    """One service shared by the API and browser tests: one intra-op thread, batches of up to 8,
    and small upload (1 MiB) and pixel (4 MP) budgets so the refusal tests send little."""
    process = start_server("--checkpoint", str(tiny_checkpoint), "--threads", "1", "--max-batch", "8",
                           "--max-wait-ms", "5", "--max-upload-mb", "1", "--max-pixels", "4000000",
                           "--no-access-log")
    yield process
    assert process.terminate() == 0, process.output()


@pytest.fixture(scope="session")
def reference_model(tiny_checkpoint):
    """The checkpoint as ``model_from_checkpoint`` gives it: what ``model.predict`` means."""
    from scaledet.engine.inference import model_from_checkpoint

    return model_from_checkpoint(tiny_checkpoint, "cpu")


@pytest.fixture(scope="session")
def coco_images(shared_data) -> list[Path]:
    folder = shared_data / "coco_tiny" / "val2017"
    images = sorted(folder.glob("*.jpg"))
    if len(images) < 16:
        pytest.skip(f"{folder}: needs 16 images, found {len(images)}")
    return images


def _assert_same_detections(body: dict, expected: dict, box_tol: float = 1e-3, score_tol: float = 1e-4) -> None:
    """A /v1/predict JSON against ``predict``'s dict for the same image."""
    detections = body["detections"]
    assert len(detections) == len(expected["scores"]), (len(detections), expected["scores"])
    if not detections:
        return
    boxes = torch.tensor([d["box"] for d in detections])
    scores = torch.tensor([d["score"] for d in detections])
    labels = [d["label"] for d in detections]
    assert torch.allclose(boxes, expected["boxes"].float(), atol=box_tol, rtol=0), (boxes - expected["boxes"]).abs().max()
    assert torch.allclose(scores, expected["scores"].float(), atol=score_tol, rtol=0)
    assert labels == expected["labels"].tolist()
    assert [d["class_name"] for d in detections] == [CLASS_NAMES[l] for l in labels]


@pytest.fixture(scope="session")
def assert_same_detections():
    return _assert_same_detections


@pytest.fixture
def serve_app():
    """``with serve_app(app) as url:`` runs an in-process app under uvicorn on a loopback port."""
    import contextlib
    import threading

    import uvicorn

    from scaledet.cli.serve import bind

    @contextlib.contextmanager
    def run(app):
        sock = bind("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while not server.started:
                assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.05)
            yield "http://127.0.0.1:%d" % sock.getsockname()[1]
        finally:
            server.should_exit = True
            thread.join(60)
            sock.close()

    return run
