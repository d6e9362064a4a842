"""The service on a loopback port: answers equal ``model.predict``; bad input gets a one-line 4xx."""
from __future__ import annotations

import io
import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from scaledet.data.images import load_image


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def blank_png(width: int, height: int) -> bytes:
    """Many pixels in few bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(width, height, seed))).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says ``width x height``: decoding it for real would need
    width * height * 3 bytes; only the header may be read."""
    real = png_bytes(1, 1)
    ihdr_at = real.index(b"IHDR")
    fields = struct.pack(">II", width, height) + real[ihdr_at + 12:ihdr_at + 17]
    chunk = b"IHDR" + fields
    return real[:ihdr_at] + chunk + struct.pack(">I", zlib.crc32(chunk)) + real[ihdr_at + 21:]


def post_image(url: str, data: bytes, *, multipart: bool = True, threshold: float | None = None,
               filename: str = "image.jpg") -> httpx.Response:
    params = {} if threshold is None else {"score_threshold": threshold}
    if multipart:
        return httpx.post(url + "/v1/predict", files={"image": (filename, data)}, params=params, timeout=120)
    return httpx.post(url + "/v1/predict", content=data, params=params, timeout=120)


def assert_refused(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    text = response.text.strip()
    assert "\n" not in text
    body = json.loads(text)
    assert list(body) == ["error"] and words in body["error"], body


def test_model_health_and_page(server):
    info = httpx.get(server.url + "/v1/model").json()
    assert info["name"] == "retinanet_spinenet49_tiny" and info["backend"] == "torch"
    assert info["class_names"] == ["circle", "square", "triangle"]
    assert info["input_size"] == 256 and info["has_mask"] is False
    assert info["threads"] == 1 and info["max_batch"] == 8
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<canvas" in page.text and "default-src 'self'" in page.headers[
        "content-security-policy"]
    for asset in ("app.js", "style.css"):
        assert httpx.get(f"{server.url}/static/{asset}").status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere


def test_predictions_equal_model_predict(server, reference_model, coco_images, assert_same_detections):
    portrait = next(p for p in coco_images if Image.open(p).height > Image.open(p).width)
    for path, multipart in ((coco_images[0], True), (portrait, False)):
        response = post_image(server.url, path.read_bytes(), multipart=multipart, filename=path.name)
        assert response.status_code == 200, response.text
        body = response.json()
        expected = reference_model.predict(path)[0]
        assert expected["scores"].numel() > 0
        height, width = load_image(path).shape[-2:]
        assert body["image"] == {"width": width, "height": height}
        assert body["model"] == "retinanet_spinenet49_tiny" and "mask" not in body
        assert_same_detections(body, expected)


def test_score_threshold_filters_like_predict(server, reference_model, coco_images, assert_same_detections):
    path = coco_images[1]
    everything = reference_model.predict(path)[0]["scores"]
    middle = len(everything) // 2
    threshold = float(everything[middle - 1] + everything[middle]) / 2  # halfway between two scores
    body = post_image(server.url, path.read_bytes(), threshold=threshold).json()
    assert body["score_threshold"] == threshold
    expected = reference_model.predict(path, score_threshold=threshold)[0]
    assert 0 < len(body["detections"]) < len(everything)
    assert_same_detections(body, expected)
    # the same threshold as a form field of the multipart upload
    form = httpx.post(server.url + "/v1/predict", files={"image": (path.name, path.read_bytes())},
                      data={"score_threshold": str(threshold)}, timeout=120).json()
    assert form["detections"] == body["detections"]


def test_concurrent_requests_share_batches_and_keep_their_own_results(server, reference_model, coco_images,
                                                                      assert_same_detections):
    wide = Image.open(coco_images[2]).convert("RGB").resize((600, 150))  # a smaller canvas than the rest
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    uploads = [p.read_bytes() for p in coco_images[:7]] + [buffer.getvalue()]
    with ThreadPoolExecutor(len(uploads)) as pool:
        responses = list(pool.map(lambda data: post_image(server.url, data), uploads))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    # each image alone: model.predict on a list would pad the wide image to the others' canvas
    expected = [reference_model.predict(image)[0] for image in list(coco_images[:7]) + [wide]]
    for response, want in zip(responses, expected):
        assert_same_detections(response.json(), want)
    assert max(r.json()["batch_size"] for r in responses) > 1


def test_bad_inputs_get_4xx_and_the_service_keeps_serving(server):
    url = server.url
    good = jpeg_bytes()

    def still_serving():
        response = post_image(url, good)
        assert response.status_code == 200 and response.json()["image"] == {"width": 320, "height": 240}

    still_serving()
    cases = [
        (lambda: post_image(url, b"", multipart=False), 400, "empty"),
        (lambda: post_image(url, b"", filename="nothing.jpg"), 400, "nothing.jpg: empty"),
        (lambda: post_image(url, b"this is a text file, not a picture\n" * 20), 415, "not an image"),
        (lambda: post_image(url, good[: len(good) // 2], filename="cut.jpg"), 400, "cut.jpg: cannot decode"),
        (lambda: post_image(url, blank_png(2100, 2000), multipart=False), 413, "4200000 pixels is over the limit"),
        (lambda: post_image(url, png_header_claiming(60000, 60000)), 413, "pixels"),
        (lambda: post_image(url, bytes(1_200_000), multipart=False), 413, "over the limit of 1048576 bytes"),
        (lambda: httpx.post(url + "/v1/predict", content=iter([bytes(300_000)] * 4), timeout=60), 413,
         "over the limit of 1048576 bytes"),  # chunked: no Content-Length to refuse up front
        (lambda: httpx.post(url + "/v1/predict", files={"note": (None, "no file")}, timeout=60), 400,
         "holds no file"),
        (lambda: post_image(url, good, threshold=1.5), 400, "score_threshold"),
        (lambda: httpx.post(url + "/v1/predict", content=good, params={"score_threshold": "high"}), 400,
         "score_threshold"),
        (lambda: httpx.get(url + "/v1/nothing"), 404, "Not Found"),
        (lambda: httpx.get(url + "/v1/predict"), 405, "Method Not Allowed"),
    ]
    for send, status, words in cases:
        assert_refused(send(), status, words)
        still_serving()


def test_metrics_count_requests_batches_and_errors(server):
    post_image(server.url, b"", multipart=False)
    assert post_image(server.url, jpeg_bytes()).status_code == 200
    text = httpx.get(server.url + "/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['scaledet_http_requests_total{method="POST",path="/v1/predict",status="200"}'] >= 1
    assert samples['scaledet_errors_total{kind="empty"}'] >= 1
    assert samples["scaledet_batch_size_count"] >= 1 and samples["scaledet_batch_size_sum"] >= 1
    assert samples['scaledet_http_request_duration_seconds_count{path="/v1/predict"}'] >= 2
    assert "scaledet_queue_wait_seconds_bucket" in text and "scaledet_images_waiting" in text
