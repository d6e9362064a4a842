"""Upload decoding and the dynamic batcher, in process (no HTTP)."""
from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from scaledet.data.images import load_image
from scaledet.serve.batcher import DynamicBatcher, QueueFull
from scaledet.serve.decode import UploadError, decode_upload


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_decode_gives_load_image_pixels(tmp_path):
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (30, 40, 4), dtype=np.uint8), "RGBA")
    rotated = Image.fromarray(rng.integers(0, 256, (20, 50, 3), dtype=np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    for name, data in (("alpha.png", encode(rgba, "PNG")), ("grey.png", encode(rgba.convert("L"), "PNG")),
                       ("exif.jpg", encode(rotated, "JPEG", exif=exif))):
        (tmp_path / name).write_bytes(data)
        decoded = decode_upload(data)
        assert decoded.dtype == torch.uint8 and decoded.shape[0] == 3
        assert torch.equal(decoded, load_image(tmp_path / name)), name
    assert decode_upload(encode(rotated, "JPEG", exif=exif)).shape[-2:] == (50, 20)


@pytest.mark.parametrize("data, status, kind", [
    (b"", 400, "empty"),
    (b"%PDF-1.7 not a picture", 415, "not_an_image"),
])
def test_decode_refusals(data, status, kind):
    with pytest.raises(UploadError) as caught:
        decode_upload(data, name="x.bin")
    assert caught.value.status == status and caught.value.kind == kind
    assert str(caught.value).startswith("x.bin: ") and "\n" not in str(caught.value)


def test_decode_refuses_truncated_and_oversized_images():
    jpeg = encode(Image.new("RGB", (64, 48), (200, 10, 10)), "JPEG")
    with pytest.raises(UploadError, match="cannot decode") as caught:
        decode_upload(jpeg[: len(jpeg) - 200])
    assert caught.value.status == 400
    big = encode(Image.new("L", (300, 200)), "PNG")
    assert decode_upload(big, max_pixels=60_000).shape == (3, 200, 300)
    with pytest.raises(UploadError, match="60000 pixels is over the limit of 59999") as caught:
        decode_upload(big, max_pixels=59_999)
    assert caught.value.status == 413 and caught.value.kind == "too_many_pixels"


class RecordingModel:
    """Stands in for ``ServedModel.predict_batch``: each output names its image, and every batch
    (and the thread it ran on) is recorded."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None):
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.fail_on = fail_on

    def __call__(self, images: list[torch.Tensor]) -> list[int]:
        ids = [int(image[0, 0, 0]) for image in images]
        self.batches.append(ids)
        self.threads.add(threading.current_thread().name)
        if self.fail_on in ids:
            raise RuntimeError(f"image {self.fail_on} breaks the model")
        threading.Event().wait(self.delay)
        return [i * 10 for i in ids]


def image_with_id(i: int) -> torch.Tensor:
    return torch.full((3, 4, 4), i, dtype=torch.uint8)


def run_concurrently(batcher: DynamicBatcher, ids: list[int], stagger: float = 0.0) -> list:
    async def main():
        await batcher.start()
        try:
            async def one(i):
                await asyncio.sleep(stagger * i)
                return await batcher.submit(image_with_id(i))

            return await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_batcher_gathers_up_to_max_batch_on_one_thread_and_splits_back():
    model = RecordingModel(delay=0.05)
    results = run_concurrently(DynamicBatcher(model, max_batch=4, max_wait_s=0.5), list(range(10)))
    assert [r.output for r in results] == [i * 10 for i in range(10)]
    assert sorted(i for batch in model.batches for i in batch) == list(range(10))
    assert max(len(b) for b in model.batches) == 4 and len(model.batches) == 3
    assert all(r.batch_size == len(next(b for b in model.batches if i in b)) for i, r in enumerate(results))
    assert len(model.threads) == 1 and next(iter(model.threads)).startswith("scaledet-model")


def test_batcher_waits_at_most_max_wait():
    model = RecordingModel()
    results = run_concurrently(DynamicBatcher(model, max_batch=64, max_wait_s=0.02), [0, 1, 2], stagger=0.3)
    assert model.batches == [[0], [1], [2]]  # 300 ms apart: no batch waits that long for company
    assert all(r.wait_s < 0.25 for r in results)


def test_batch_size_one_turns_batching_off():
    model = RecordingModel(delay=0.01)
    run_concurrently(DynamicBatcher(model, max_batch=1, max_wait_s=0.1), list(range(5)))
    assert sorted(model.batches) == [[i] for i in range(5)]


def test_a_failing_image_fails_only_its_own_request():
    model = RecordingModel(fail_on=2)
    results = run_concurrently(DynamicBatcher(model, max_batch=8, max_wait_s=0.2), list(range(5)))
    assert isinstance(results[2], RuntimeError) and "image 2" in str(results[2])
    assert [r.output for i, r in enumerate(results) if i != 2] == [0, 10, 30, 40]


def test_queue_limit_refuses_instead_of_growing():
    model = RecordingModel(delay=0.3)
    results = run_concurrently(DynamicBatcher(model, max_batch=1, max_wait_s=0.0, max_queue=2), list(range(6)))
    refused = [r for r in results if isinstance(r, QueueFull)]
    assert refused and all("limit 2" in str(r) for r in refused)
    assert all(r.output == i * 10 for i, r in enumerate(results) if not isinstance(r, QueueFull))


def test_batcher_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(RecordingModel(), max_batch=0)
    with pytest.raises(ValueError, match="max_wait"):
        DynamicBatcher(RecordingModel(), max_wait_s=-1)
