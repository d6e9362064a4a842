"""TFRecord shards (TF OD API layout): round trip against CocoDetection, framing, corruption."""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import crc32c
import numpy as np
import pytest
import torch
from PIL import Image
from tfrecord import example_pb2
from tfrecord.reader import tfrecord_loader

from scaledet.cli.main import main
from scaledet.data.coco import CocoDetection
from scaledet.data.tfrecord import (TFRecordDetection, TFRecordError, category_table_from_coco_json,
                                    write_coco_tfrecords)
from scaledet.data.transforms import EvalTransform


@pytest.fixture(scope="module")
def tiny_shards(coco_tiny, tmp_path_factory) -> Path:
    """coco_tiny train2017 as 3 shards (with masks), written through the CLI; returns the prefix."""
    prefix = tmp_path_factory.mktemp("tfrecord") / "train"
    code = main(["convert-data", "coco-to-tfrecord", "--images", str(coco_tiny / "train2017"),
                 "--annotations", str(coco_tiny / "annotations" / "instances_train2017.json"),
                 "--output", str(prefix), "--shards", "3", "--include-masks"])
    assert code == 0
    return prefix


def _read_frames(path: Path) -> list[bytes]:
    """Independent minimal TFRecord reader: u64 length, masked crc, data, masked crc."""
    def masked(data: bytes) -> int:
        crc = crc32c.crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32

    blob, pos, records = path.read_bytes(), 0, []
    while pos < len(blob):
        length_bytes = blob[pos:pos + 8]
        (length,), (length_crc,) = struct.unpack("<Q", length_bytes), struct.unpack("<I", blob[pos + 8:pos + 12])
        assert masked(length_bytes) == length_crc
        data = blob[pos + 12:pos + 12 + length]
        (data_crc,) = struct.unpack("<I", blob[pos + 12 + length:pos + 16 + length])
        assert len(data) == length and masked(data) == data_crc
        records.append(data)
        pos += 16 + length
    assert pos == len(blob)
    return records


def test_round_trip_matches_coco(coco_tiny, tiny_shards):
    json_path = coco_tiny / "annotations" / "instances_train2017.json"
    coco = CocoDetection(coco_tiny / "train2017", json_path, with_masks=True)
    shards = sorted(tiny_shards.parent.glob("train-*"))
    assert [p.name for p in shards] == [f"train-0000{k}-of-00003.tfrecord" for k in range(3)]
    ds = TFRecordDetection(f"{tiny_shards}-*", with_masks=True)
    assert len(ds) == len(coco) == 80 and len(ds.shards) == 3
    assert ds.label_to_category_id == coco.label_to_category_id
    assert ds.category_id_to_label == coco.category_id_to_label
    assert ds.class_names == coco.class_names
    index_of_id = {image_id: k for k, image_id in enumerate(coco.image_ids)}
    seen = set()
    for i in range(len(ds)):
        image, target = ds[i]
        ref_image, ref = coco[index_of_id[target["image_id"]]]
        seen.add(target["image_id"])
        assert torch.equal(image, ref_image)
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == ref["boxes"].shape
        assert torch.allclose(target["boxes"], ref["boxes"], atol=1e-3, rtol=0)
        assert torch.equal(target["labels"], ref["labels"]) and target["labels"].dtype == torch.int64
        assert torch.equal(target["iscrowd"], ref["iscrowd"]) and target["iscrowd"].dtype == torch.bool
        assert (target["file_name"], target["orig_size"], target["scale"]) == \
            (ref["file_name"], ref["orig_size"], ref["scale"])
        assert torch.equal(target["mask"], ref["mask"])
        annotations = ds.annotations(i)
        assert torch.equal(annotations["boxes"], target["boxes"])
    assert seen == set(coco.image_ids)
    assert sum(int(ds.load_raw(i)[1]["iscrowd"].sum()) for i in range(len(ds))) == 6

    # With a transform, both data sets give the same network input.
    transform = EvalTransform(128)
    k = ds.load_raw(5)[1]["image_id"]
    a_img, a_t = TFRecordDetection(f"{tiny_shards}-*", transform)[5]
    b_img, b_t = CocoDetection(coco_tiny / "train2017", json_path, transform)[index_of_id[k]]
    assert torch.equal(a_img, b_img) and torch.allclose(a_t["boxes"], b_t["boxes"], atol=1e-3)


def test_framing_is_standard_and_readable_elsewhere(coco_tiny, tiny_shards):
    ds = TFRecordDetection(f"{tiny_shards}-*")
    source_ids, encoded = [], []
    for shard in ds.shards:
        for data in _read_frames(shard):
            example = example_pb2.Example.FromString(data)
            feature = example.features.feature
            source_ids.append(int(feature["image/source_id"].bytes_list.value[0]))
            encoded.append(feature["image/encoded"].bytes_list.value[0])
            assert feature["image/format"].bytes_list.value[0] == b"jpeg"
            n = len(feature["image/object/class/label"].int64_list.value)
            assert len(feature["image/object/area"].float_list.value) == n
            assert len(feature["image/object/class/text"].bytes_list.value) == n
            xs = np.array(feature["image/object/bbox/xmax"].float_list.value)
            assert ((xs >= 0) & (xs <= 1)).all()
    assert source_ids == [ds.load_raw(i)[1]["image_id"] for i in range(len(ds))]
    # JPEG bytes are the original files, not re-encoded.
    raw = json.loads((coco_tiny / "annotations" / "instances_train2017.json").read_text())
    name_of = {img["id"]: img["file_name"] for img in raw["images"]}
    assert encoded[0] == (coco_tiny / "train2017" / name_of[source_ids[0]]).read_bytes()
    # Image i goes to shard i % 3, as the TF OD API converter does.
    first_of_shard = int(example_pb2.Example.FromString(_read_frames(ds.shards[1])[0])
                         .features.feature["image/source_id"].bytes_list.value[0])
    assert first_of_shard == raw["images"][1]["id"]
    # The tfrecord package's own sequential reader agrees with the indexed order.
    sequential = [int(bytes(r["image/source_id"]))
                  for shard in ds.shards for r in tfrecord_loader(str(shard), None, ["image/source_id"])]
    assert sequential == source_ids


def test_shuffled_random_access_equals_sequential(tiny_shards):
    ds = TFRecordDetection(f"{tiny_shards}-*")
    subset = list(range(0, len(ds), 4))
    sequential = {i: ds[i] for i in subset}
    order = subset[:]
    random.Random(0).shuffle(order)
    assert order != subset
    for i in order:
        image, target = ds[i]
        ref_image, ref = sequential[i]
        assert torch.equal(image, ref_image) and target["image_id"] == ref["image_id"]
        assert torch.equal(target["boxes"], ref["boxes"]) and torch.equal(target["labels"], ref["labels"])
    assert ds[-1][1]["image_id"] == ds[len(ds) - 1][1]["image_id"]
    with pytest.raises(IndexError):
        ds[len(ds)]


def _corrupt_copy(src: Path, dst_dir: Path, position: int) -> Path:
    dst_dir.mkdir()
    blob = bytearray(src.read_bytes())
    blob[position] ^= 0xFF
    dst = dst_dir / src.name
    dst.write_bytes(bytes(blob))
    return dst


def test_corrupt_byte_names_shard_and_offset(tiny_shards, tmp_path):
    shard = sorted(tiny_shards.parent.glob("train-*"))[1]
    (first_length,) = struct.unpack("<Q", shard.read_bytes()[:8])
    second = 16 + first_length  # offset of the second record
    table = dict(label_to_category_id=list(range(1, 91)), class_names=[str(i) for i in range(1, 91)])

    # A flipped byte inside the second record's data: found by the category pass at construction ...
    bad = _corrupt_copy(shard, tmp_path / "data", second + 12 + 1000)
    with pytest.raises(TFRecordError) as err:
        TFRecordDetection(str(bad))
    message = str(err.value)
    assert str(bad) in message and f"byte offset {second}" in message and "crc" in message
    assert "\n" not in message
    # ... or, with the category table given (no pass), when that record is read.
    ds = TFRecordDetection(str(bad), **table)
    ds[0]
    with pytest.raises(TFRecordError, match=f"{bad.name}: corrupt record at byte offset {second} "):
        ds[1]

    # A flipped length byte makes the header index fail at once.
    bad_header = _corrupt_copy(shard, tmp_path / "header", second + 2)
    with pytest.raises(TFRecordError, match=f"{bad_header.name}: corrupt record at byte offset {second} "
                                            r"\(length crc"):
        TFRecordDetection(str(bad_header), **table)

    # A truncated shard, and a pattern matching nothing.
    (tmp_path / "short").mkdir()
    short = tmp_path / "short" / shard.name
    short.write_bytes(shard.read_bytes()[:-3])
    with pytest.raises(TFRecordError, match=f"{short.name}: truncated record"):
        TFRecordDetection(str(short), **table)
    with pytest.raises(TFRecordError, match="no TFRecord shards match"):
        TFRecordDetection(str(tmp_path / "nothing-*"))


def _tiny_coco(root: Path) -> Path:
    """Three PNG images, categories 3/5/7 of which 5 never occurs, one crowd and one clipped box."""
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = [{"id": 21, "file_name": "a.png", "width": 40, "height": 30},
              {"id": 22, "file_name": "b.png", "width": 20, "height": 50},
              {"id": 23, "file_name": "c.png", "width": 16, "height": 16}]
    for img in images:
        pixels = rng.integers(0, 256, (img["height"], img["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img" / img["file_name"])
    anns = [{"id": 1, "image_id": 21, "category_id": 7, "bbox": [1.5, 2.25, 10, 20], "iscrowd": 0, "area": 150.0},
            {"id": 2, "image_id": 21, "category_id": 3, "bbox": [30, 0, 20, 5], "iscrowd": 1, "area": 50.0},
            {"id": 3, "image_id": 22, "category_id": 3, "bbox": [0, 0, 20, 50], "iscrowd": 0, "area": 900.0}]
    cats = [{"id": 7, "name": "dog"}, {"id": 5, "name": "bird"}, {"id": 3, "name": "cat"}]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_missing_class_needs_the_table_from_the_json(tmp_path):
    json_path = _tiny_coco(tmp_path / "coco")
    with pytest.warns(UserWarning, match="clipped 1"):
        paths = write_coco_tfrecords(tmp_path / "coco" / "img", json_path, tmp_path / "out" / "val", 2)
    assert [p.name for p in paths] == ["val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord"]

    # Default: only the categories that occur (5 is missing), names from class/text.
    found = TFRecordDetection(str(tmp_path / "out" / "val-*"))
    assert found.label_to_category_id == [3, 7] and found.class_names == ["cat", "dog"]

    ids, names = category_table_from_coco_json(json_path)
    assert ids == [3, 5, 7] and names == ["cat", "bird", "dog"]
    ds = TFRecordDetection(str(tmp_path / "out" / "val-*"), label_to_category_id=ids, class_names=names)
    with pytest.warns(UserWarning):
        coco = CocoDetection(tmp_path / "coco" / "img", json_path)
    assert ds.num_classes == 3 and ds.category_id_to_label == coco.category_id_to_label
    by_id = {}
    for i in range(len(ds)):
        image, target = ds[i]
        by_id[target["image_id"]] = (image, target)
    assert sorted(by_id) == [21, 22, 23]
    for k, image_id in enumerate(coco.image_ids):
        image, target = by_id[image_id]
        ref_image, ref = coco[k]
        assert torch.equal(image, ref_image)
        assert torch.allclose(target["boxes"], ref["boxes"], atol=1e-3, rtol=0)
        assert torch.equal(target["labels"], ref["labels"]) and torch.equal(target["iscrowd"], ref["iscrowd"])
    assert by_id[21][1]["boxes"][1].tolist() == pytest.approx([30, 0, 40, 5], abs=1e-3)  # clipped
    assert by_id[23][1]["boxes"].shape == (0, 4)  # no objects

    # A record whose category is outside the given table is named.
    narrow = TFRecordDetection(str(tmp_path / "out" / "val-*"), label_to_category_id=[3], class_names=["cat"])
    with pytest.raises(TFRecordError, match=r"val-0000\d-of-00002.tfrecord: record at byte offset \d+: "
                                            "category id 7 is not in"):
        [narrow[i] for i in range(len(narrow))]


def test_cli_reports_bad_input(tmp_path, capsys):
    json_path = _tiny_coco(tmp_path / "coco")
    code = main(["convert-data", "coco-to-tfrecord", "--images", str(tmp_path / "coco" / "img"),
                 "--annotations", str(json_path), "--output", str(tmp_path / "o"), "--shards", "0"])
    assert code == 1 and "--shards must be at least 1" in capsys.readouterr().err
    code = main(["convert-data", "coco-to-tfrecord", "--images", str(tmp_path / "missing"),
                 "--annotations", str(json_path), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "missing" in err and len(err.strip().splitlines()) == 1
