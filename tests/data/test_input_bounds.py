"""Inputs stay within bounds: annotation paths under the data folder, a pixel limit on every
decode, TFRecord lengths checked against the file size (real coco_tiny / VOC files)."""
import hashlib
import json
import struct

import pytest
from PIL import Image

from scaledet.data.coco import CocoDetection
from scaledet.data.images import load_image
from scaledet.data.tfrecord import TFRecordError, iter_records, read_record
from scaledet.data.voc import VOCDetection
from scaledet.errors import DataError


def _coco_with_file_name(coco_tiny, tmp_path, file_name):
    data = json.loads((coco_tiny / "annotations" / "instances_train2017.json").read_text())
    data["images"] = data["images"][:2]
    data["images"][1]["file_name"] = file_name
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("file_name", ["/etc/passwd", "../../secret.jpg", "sub/../../x.jpg", "C:\\x.jpg"])
def test_coco_file_name_outside_the_image_folder_is_refused(coco_tiny, tmp_path, file_name):
    ann = _coco_with_file_name(coco_tiny, tmp_path, file_name)
    with pytest.raises(DataError, match=r"ann.json: image #1 \(id \d+\) file_name: .* points outside the data "
                                        r"folder .*data.allow_outside_root"):
        CocoDetection(coco_tiny / "train2017", ann)
    # allowed on request: the path is then used as given (and reading it is the user's choice)
    dataset = CocoDetection(coco_tiny / "train2017", ann, allow_outside_root=True)
    assert dataset.file_names[1] == file_name


def test_voc_split_ids_outside_the_folder_are_refused(voc100, tmp_path):
    split = tmp_path / "split.txt"
    first = sorted(p.stem for p in (voc100 / "Annotations").glob("*.xml"))[0]
    split.write_text(f"{first}\n../../../etc/passwd\n")
    with pytest.raises(DataError, match=r"split.txt: image id: '../../../etc/passwd' points outside"):
        VOCDetection(voc100, split=split)


def test_pixel_limit_applies_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(path)  # 6 Mpx, a few KB compressed
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_image(path).shape == (3, 2000, 3000)  # under the 40 Mpx default
    monkeypatch.setenv("SCALEDET_MAX_IMAGE_PIXELS", "5000000")
    with pytest.raises(DataError, match=r"big.png: image of 3000x2000 = 6.0 Mpx is over the 5 Mpx limit"):
        load_image(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def _frame(data: bytes, claimed_length: int) -> bytes:
    from tfrecord.writer import TFRecordWriter

    length = struct.pack("<Q", claimed_length)
    return length + TFRecordWriter.masked_crc(length) + data + TFRecordWriter.masked_crc(data)


def test_tfrecord_length_beyond_the_file_is_an_error_not_an_allocation(tmp_path):
    shard = tmp_path / "bad.tfrecord"
    shard.write_bytes(_frame(b"x" * 16, 2 ** 50))  # a valid length crc for an absurd length
    with pytest.raises(TFRecordError, match=r"bad.tfrecord: record at byte offset 0 claims 1125899906842624 data "
                                            r"bytes, but the file has only 16 left"):
        read_record(shard, 0)
    with pytest.raises(TFRecordError, match="claims"):
        list(iter_records(shard))
