"""Load on loopback: 16 concurrent clients for 20 seconds, each sending its own image."""
from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from scaledet.data.images import load_image

CLIENTS = 16
SECONDS = 20.0


@pytest.mark.slow
def test_sixteen_clients_get_their_own_answers_and_no_5xx(start_server, tiny_checkpoint, coco_images,
                                                           reference_model, assert_same_detections):
    server = start_server("--checkpoint", str(tiny_checkpoint), "--threads", "1", "--max-batch", "16",
                          "--max-wait-ms", "10", "--no-access-log")
    images = coco_images[:CLIENTS]
    uploads = [p.read_bytes() for p in images]
    expected = [reference_model.predict(p)[0] for p in images]  # each image alone
    sizes = [dict(zip(("height", "width"), load_image(p).shape[-2:])) for p in images]
    assert len({tuple(e["scores"].tolist()) for e in expected}) == CLIENTS  # answers tell the images apart

    def client(index: int) -> list[httpx.Response]:
        responses = []
        with httpx.Client(base_url=server.url, timeout=120) as http:
            while time.monotonic() < stop:
                responses.append(http.post("/v1/predict", content=uploads[index]))
        return responses

    stop = time.monotonic() + SECONDS
    with ThreadPoolExecutor(CLIENTS) as pool:
        per_client = list(pool.map(client, range(CLIENTS)))

    statuses = Counter(r.status_code for responses in per_client for r in responses)
    assert statuses == {200: sum(statuses.values())}, statuses
    assert all(per_client), [len(r) for r in per_client]  # every client was answered
    for index, responses in enumerate(per_client):
        for response in responses:
            body = response.json()
            assert body["image"] == {"width": sizes[index]["width"], "height": sizes[index]["height"]}
            assert_same_detections(body, expected[index])
    metrics = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in httpx.get(server.url + "/metrics").text.splitlines() if line and line[0] != "#"}
    assert metrics["scaledet_batch_size_sum"] == sum(statuses.values())
    assert metrics["scaledet_batch_size_sum"] > metrics["scaledet_batch_size_count"]  # requests shared runs
    assert server.terminate() == 0, server.output()
