"""CocoDetection: real COCO subset, and every kind of bad annotation failing fast and clearly."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scaledet.data.coco import AnnotationError, CocoDetection
from scaledet.data.images import ImageError
from scaledet.data.transforms import EvalTransform


def _write_dataset(root: Path, annotations: list[dict], *, categories=None, images=None) -> Path:
    """Two small PNGs (40x30 and 20x50) plus a json; returns the json path."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    default_images = [{"id": 11, "file_name": "a.png", "width": 40, "height": 30},
                      {"id": 12, "file_name": "b.png", "width": 20, "height": 50}]
    for img in default_images:
        pixels = rng.integers(0, 256, (img["height"], img["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img" / img["file_name"])
    data = {"images": images if images is not None else default_images,
            "annotations": annotations,
            "categories": categories if categories is not None else
            [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]}
    path = root / "instances.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def _ann(ann_id: int, image_id: int, category_id: int, bbox, iscrowd: int = 0) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "iscrowd": iscrowd, "area": bbox[2] * bbox[3]}


def test_coco_tiny_matches_the_json(coco_tiny):
    json_path = coco_tiny / "annotations" / "instances_train2017.json"
    raw = json.loads(json_path.read_text())
    ds = CocoDetection(coco_tiny / "train2017", json_path)
    assert len(ds) == 80
    assert ds.num_classes == 80 and len(ds.class_names) == 80
    assert ds.num_clipped_boxes == 0 and ds.num_dropped_boxes == 0
    # Contiguous labels map back to the sorted original ids.
    original_ids = sorted(c["id"] for c in raw["categories"])
    assert ds.label_to_category_id == original_ids
    assert all(ds.category_id_to_label[cid] == k for k, cid in enumerate(original_ids))
    assert ds.class_names[0] == "person"

    by_image: dict[int, list[dict]] = {}
    for ann in raw["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    total, crowd = 0, 0
    for index in range(0, len(ds), 8):  # decode every 8th image; targets are checked for all below
        image, target = ds.load_raw(index)
        assert image.dtype == torch.uint8 and tuple(image.shape[-2:]) == target["orig_size"]
    for index in range(len(ds)):
        anns = by_image.get(ds.image_ids[index], [])
        gt = ds.annotations(index)
        boxes = gt["boxes"].numpy()
        expected = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                              a["bbox"][1] + a["bbox"][3]] for a in anns], np.float32).reshape(-1, 4)
        np.testing.assert_allclose(boxes, expected, atol=1e-3)
        labels = gt["labels"]
        assert [ds.label_to_category_id[int(l)] for l in labels] == [a["category_id"] for a in anns]
        assert gt["iscrowd"].tolist() == [bool(a["iscrowd"]) for a in anns]
        total += len(anns)
        crowd += int(gt["iscrowd"].sum())
    assert total == 705 and crowd == 6  # numbers recorded in coco_tiny/SOURCE.md


def test_coco_tiny_item_follows_the_contract(coco_tiny):
    json_path = coco_tiny / "annotations" / "instances_train2017.json"
    ds = CocoDetection(coco_tiny / "train2017", json_path, EvalTransform(320))
    image, target = ds[0]
    raw_image, raw_target = ds.load_raw(0)
    assert image.dtype == torch.float32 and image.shape[0] == 3 and max(image.shape[1:]) == 320
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["iscrowd"].dtype == torch.bool
    assert target["file_name"] == ds.file_names[0] and target["image_id"] == ds.image_ids[0]
    sy, sx = target["scale"]
    back = target["boxes"] / torch.tensor([sx, sy, sx, sy])
    torch.testing.assert_close(back, raw_target["boxes"], atol=1e-3, rtol=1e-5)
    assert target["orig_size"] == tuple(raw_image.shape[-2:])


def test_labels_crowd_and_empty_images(tmp_path):
    path = _write_dataset(tmp_path, [_ann(1, 11, 7, [1, 2, 10, 5]), _ann(2, 11, 3, [5, 5, 4, 4], iscrowd=1)])
    ds = CocoDetection(tmp_path / "img", path)
    assert ds.label_to_category_id == [3, 7] and ds.class_names == ["cat", "dog"]
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8
    assert target["boxes"].tolist() == [[1, 2, 11, 7], [5, 5, 9, 9]]
    assert target["labels"].tolist() == [1, 0]
    assert target["iscrowd"].tolist() == [False, True]
    assert target["scale"] == (1.0, 1.0) and target["orig_size"] == (30, 40)
    image, target = ds[1]  # no annotations: kept, with empty tensors
    assert image.shape == (3, 50, 20)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_negative_width_names_file_annotation_and_image(tmp_path):
    path = _write_dataset(tmp_path, [_ann(1, 11, 7, [1, 2, 10, 5]), _ann(42, 12, 3, [5, 5, -4, 4])])
    with pytest.raises(AnnotationError) as err:
        CocoDetection(tmp_path / "img", path)
    message = str(err.value)
    assert "\n" not in message
    for part in ("instances.json", "annotation id 42", "image id 12", "b.png", "negative"):
        assert part in message


def test_boxes_outside_are_clipped_and_counted(tmp_path):
    path = _write_dataset(tmp_path, [_ann(1, 11, 7, [-5, 20, 20, 20]),   # clipped
                                     _ann(2, 11, 7, [30, 1, 30, 5]),     # clipped
                                     _ann(3, 11, 3, [2, 2, 5, 5]),       # fine
                                     _ann(4, 12, 3, [25, 5, 10, 10]),    # fully outside: dropped
                                     _ann(5, 12, 3, [3, 3, 0, 8])])      # zero width: dropped
    with pytest.warns(UserWarning, match=r"clipped 3 boxes.*dropped 2 boxes"):
        ds = CocoDetection(tmp_path / "img", path)
    assert ds.num_clipped_boxes == 3 and ds.num_dropped_boxes == 2
    _, target = ds[0]
    assert target["boxes"].tolist() == [[0, 20, 15, 30], [30, 1, 40, 6], [2, 2, 7, 7]]
    _, target = ds[1]
    assert len(target["boxes"]) == 0


def test_clean_file_gives_no_warning(tmp_path):
    path = _write_dataset(tmp_path, [_ann(1, 11, 7, [0, 0, 40, 30])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CocoDetection(tmp_path / "img", path)


def test_unknown_category_is_named(tmp_path):
    path = _write_dataset(tmp_path, [_ann(9, 11, 99, [1, 1, 3, 3])])
    with pytest.raises(AnnotationError, match=r"instances\.json.*annotation id 9.*unknown category id 99"):
        CocoDetection(tmp_path / "img", path)


def test_malformed_json_gives_position(tmp_path):
    path = _write_dataset(tmp_path, [])
    text = path.read_text()
    path.write_text(text[:-3] + ",,}")
    with pytest.raises(AnnotationError) as err:
        CocoDetection(tmp_path / "img", path)
    message = str(err.value)
    assert "\n" not in message
    assert "instances.json" in message and "malformed JSON at line" in message and "column" in message


def test_missing_keys_are_named(tmp_path):
    path = _write_dataset(tmp_path, [{"id": 3, "image_id": 11, "category_id": 7}])
    with pytest.raises(AnnotationError, match=r"annotation id 3 is missing key 'bbox'"):
        CocoDetection(tmp_path / "img", path)
    path = _write_dataset(tmp_path, [], images=[{"id": 1, "file_name": "a.png", "width": 40}])
    with pytest.raises(AnnotationError, match=r"image #0 \(id 1\) is missing key 'height'"):
        CocoDetection(tmp_path / "img", path)
    data = json.loads(path.read_text())
    del data["categories"]
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"missing top-level key 'categories'"):
        CocoDetection(tmp_path / "img", path)


def test_missing_and_corrupt_images_fail_per_item(tmp_path):
    path = _write_dataset(tmp_path, [_ann(1, 11, 7, [1, 2, 10, 5])])
    ds = CocoDetection(tmp_path / "img", path)
    (tmp_path / "img" / "a.png").unlink()
    with pytest.raises(ImageError, match=r"a\.png: image file not found"):
        ds[0]
    (tmp_path / "img" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    with pytest.raises(ImageError, match=r"b\.png: cannot decode"):
        ds[1]


def test_decoded_size_must_match_json(tmp_path):
    images = [{"id": 11, "file_name": "a.png", "width": 30, "height": 40}]  # swapped on purpose
    path = _write_dataset(tmp_path, [], images=images)
    ds = CocoDetection(tmp_path / "img", path)
    with pytest.raises(ImageError, match=r"a\.png: decoded size 30x40.*differs from 40x30"):
        ds[0]


def test_semantic_mask_from_polygons(tmp_path):
    ann = _ann(1, 11, 7, [10, 5, 10, 10])
    ann["segmentation"] = [[10, 5, 20, 5, 20, 15, 10, 15]]
    crowd = _ann(2, 11, 3, [0, 20, 5, 5], iscrowd=1)
    crowd["segmentation"] = [[0, 20, 5, 20, 5, 25, 0, 25]]
    path = _write_dataset(tmp_path, [ann, crowd])
    ds = CocoDetection(tmp_path / "img", path, with_masks=True)
    _, target = ds[0]
    mask = target["mask"]
    assert mask.dtype == torch.int64 and mask.shape == (30, 40)
    assert mask[7:13, 12:18].eq(2).all()          # dog = label 1 -> value 2
    assert mask[21:24, 1:4].eq(255).all()         # crowd region is ignored
    assert mask[0:4, 25:40].eq(0).all()           # background
    assert set(mask.unique().tolist()) == {0, 2, 255}
