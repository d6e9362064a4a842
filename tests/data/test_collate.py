"""collate pads to the size divisor; build_loader is reproducible with workers."""
from __future__ import annotations

import torch

from scaledet.data.coco import CocoDetection
from scaledet.data.collate import build_loader, collate
from scaledet.data.synthetic import make_synthetic_coco
from scaledet.data.transforms import TrainTransform


def test_collate_pads_to_multiple_and_keeps_sizes():
    a, b = torch.randn(3, 100, 130), torch.randn(3, 129, 64)
    batch = collate([(a, {"image_id": 1}), (b, {"image_id": 2})], size_divisor=128)
    images = batch["images"]
    assert images.shape == (2, 3, 256, 256)
    assert batch["image_sizes"] == [(100, 130), (129, 64)]
    assert [t["image_id"] for t in batch["targets"]] == [1, 2]
    assert torch.equal(images[0, :, :100, :130], a) and images[0, :, 100:].eq(0).all()
    assert images[0, :, :, 130:].eq(0).all()
    assert torch.equal(images[1, :, :129, :64], b) and images[1, :, :, 64:].eq(0).all()
    exact = collate([(a, {}), (a, {})], size_divisor=1)
    assert exact["images"].shape == (2, 3, 100, 130)


def _first_batch(dataset, seed: int) -> dict:
    loader = build_loader(dataset, 4, shuffle=True, num_workers=2, size_divisor=128, seed=seed,
                          drop_last=True)
    batch = next(iter(loader))
    del loader  # shut the persistent workers down
    return batch


def test_loader_with_workers_is_reproducible(tmp_path):
    paths = make_synthetic_coco(tmp_path / "syn", num_train=12, num_val=0, image_size=96)
    dataset = CocoDetection(paths.train_images, paths.train_json, TrainTransform(96))
    first = _first_batch(dataset, seed=7)
    again = _first_batch(dataset, seed=7)
    other = _first_batch(dataset, seed=8)
    assert first["images"].shape == (4, 3, 128, 128)
    assert first["image_sizes"] == [(96, 96)] * 4
    assert torch.equal(first["images"], again["images"])
    ids = [t["image_id"] for t in first["targets"]]
    assert ids == [t["image_id"] for t in again["targets"]]
    for t, u in zip(first["targets"], again["targets"]):
        assert torch.equal(t["boxes"], u["boxes"])
    assert not torch.equal(first["images"], other["images"])
