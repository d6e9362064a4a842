"""TFRecord detection shards in the TensorFlow Object Detection API layout, without TensorFlow.

These are the ``train-*`` / ``val-*`` shards the SpineNet TPU code trains on: one serialised
``tf.train.Example`` per image with the JPEG bytes, the image size, ``source_id`` (the image id)
and per-object ``bbox/xmin|ymin|xmax|ymax`` normalised to [0, 1], ``class/label`` (COCO
category ids), ``class/text``, ``is_crowd``, ``area`` and optionally ``mask`` (one PNG per object).

The BlitzNet authors' VOC records (docs/reference/BLITZNET.md §8.3) are read too: the same image and
box keys, ``class/label`` = VOC class index 1..20 (0 is the background), no ``class/text`` or
``source_id``, plus ``image/object/difficulty`` (0/1 per object) and ``image/segmentation/encoded``
(one single-channel PNG of class indices, 255 = void). Records holding either key are read in that
layout (:mod:`scaledet.data.tfrecord_voc` writes it).

What the ``tfrecord`` package gives us and what it lacks:

* its ``TFRecordWriter`` does the framing (length, masked crc32c of the length, data, masked
  crc32c of the data) and its ``example_pb2`` is the ``tf.train.Example`` protobuf: both used here;
* its readers ignore both checksums, cannot start at a given record and reuse one buffer for every
  record, and its index tool writes text files next to the shards and stops silently on a broken
  file. So reading records at an offset, verifying their crcs and building the in-memory
  ``(shard, offset)`` index are written by hand below.
"""
from __future__ import annotations

import contextlib
import glob
import io
import logging
import math
import os
import struct
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from tfrecord import example_pb2
from tfrecord.writer import TFRecordWriter

from scaledet.data.coco import AnnotationError, CocoDetection, read_coco_json
from scaledet.data.images import ImageError, check_pixel_limit, decode_image
from scaledet.data.base import RawThenTransform
from scaledet.errors import DataError, OutputError, UsageError
from scaledet.utils.atomic import atomic_path

__all__ = ["TFRecordDetection", "TFRecordError", "category_table_from_coco_json", "decode_image_bytes",
           "write_coco_tfrecords"]

log = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]

# Keys only the BlitzNet authors' VOC/COCO records have.
BLITZNET_KEYS = {"image/segmentation/encoded", "image/object/difficulty"}
_HEADER = struct.Struct("<QI")  # record length, masked crc32c of those 8 length bytes
_CRC = struct.Struct("<I")


class TFRecordError(DataError):
    """A TFRecord shard that is truncated, corrupt or holds an unusable example."""


# -- record framing ---------------------------------------------------------------------------
def _masked_crc(data: bytes | memoryview) -> int:
    # The package's writer computes the same mask; it returns packed bytes, we compare ints.
    return _CRC.unpack(TFRecordWriter.masked_crc(bytes(data)))[0]


def _check_header(header: bytes, path: Path, offset: int) -> int:
    if len(header) != _HEADER.size:
        raise TFRecordError(f"{path}: truncated record header at byte offset {offset}")
    length, length_crc = _HEADER.unpack(header)
    if _masked_crc(header[:8]) != length_crc:
        raise TFRecordError(f"{path}: corrupt record at byte offset {offset} (length crc mismatch)")
    return length


def _read_body(f: io.BufferedReader, length: int, path: Path, offset: int) -> bytes:
    left = os.fstat(f.fileno()).st_size - f.tell()
    if length + _CRC.size > left:  # checked before reading: a corrupt length must not allocate it
        raise TFRecordError(f"{path}: record at byte offset {offset} claims {length} data bytes, but the file has "
                            f"only {max(left - _CRC.size, 0)} left (truncated or corrupt)")
    body = f.read(length + _CRC.size)
    if len(body) != length + _CRC.size:
        raise TFRecordError(f"{path}: truncated record at byte offset {offset} "
                            f"(expected {length} data bytes + crc, file ends after {len(body)})")
    data = body[:length]
    if _masked_crc(data) != _CRC.unpack(body[length:])[0]:
        raise TFRecordError(f"{path}: corrupt record at byte offset {offset} (data crc mismatch)")
    return data


def read_record(path: Path, offset: int) -> bytes:
    """The crc-checked data of the record starting at ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        length = _check_header(f.read(_HEADER.size), path, offset)
        return _read_body(f, length, path, offset)


def iter_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(offset, data)`` of every record of a shard, crc-checked."""
    with open(path, "rb") as f:
        offset = 0
        while header := f.read(_HEADER.size):
            length = _check_header(header, path, offset)
            yield offset, _read_body(f, length, path, offset)
            offset += _HEADER.size + length + _CRC.size


def index_shard(path: Path) -> list[int]:
    """Record offsets from the headers alone (length crcs checked, data read lazily)."""
    size = path.stat().st_size
    offsets: list[int] = []
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            f.seek(offset)
            length = _check_header(f.read(_HEADER.size), path, offset)
            end = offset + _HEADER.size + length + _CRC.size
            if end > size:
                raise TFRecordError(f"{path}: truncated record at byte offset {offset} "
                                    f"(needs {end - size} more bytes)")
            offsets.append(offset)
            offset = end
    return offsets


# -- images -----------------------------------------------------------------------------------
def decode_image_bytes(data: bytes, name: str) -> torch.Tensor:
    """Encoded image bytes to ``uint8 [3, H, W]`` RGB, decoded exactly as ``load_image`` does."""
    return decode_image(io.BytesIO(data), name)


def _image_format(path: Path) -> bytes:
    suffix = path.suffix.lower().lstrip(".")
    return b"jpeg" if suffix in ("jpg", "jpeg") else suffix.encode()


def _instance_mask_png(segm: Any, box: np.ndarray, height: int, width: int) -> bytes:
    from faster_coco_eval.core import mask as mask_utils

    if segm:
        binary = mask_utils.decode(mask_utils.segmToRle(segm, width, height)).astype(np.uint8)
    else:  # no outline given: the box is the best mask we have
        binary = np.zeros((height, width), np.uint8)
        x1, y1, x2, y2 = box
        binary[int(y1):int(math.ceil(y2)), int(x1):int(math.ceil(x2))] = 1
    out = io.BytesIO()
    Image.fromarray(binary, "L").save(out, format="PNG")  # 0/1 values, as the TF OD API writes
    return out.getvalue()


def _extras_per_image(data: dict, dataset: CocoDetection) -> list[list[dict]]:
    """Raw json annotations aligned with the boxes ``CocoDetection`` keeps (for area / masks).

    CocoDetection drops boxes of zero area after clipping; the same rule applied in the same
    order keeps the lists in step (checked against the kept boxes by the caller).
    """
    index_of_id = {image_id: k for k, image_id in enumerate(dataset.image_ids)}
    kept: list[list[dict]] = [[] for _ in dataset.image_ids]
    for ann in data["annotations"]:
        k = index_of_id[ann["image_id"]]
        height, width = dataset.sizes[k]
        x, y, w, h = (float(v) for v in ann["bbox"])
        x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x2 > x1 and y2 > y1:
            kept[k].append({**ann, "_clipped": (x1, y1, x2, y2)})
    return kept


def _features(dataset: CocoDetection, index: int, annotations: list[dict],
              include_masks: bool) -> dict[str, tuple[Any, str]]:
    """One image as the ``{key: (values, kind)}`` dict ``TFRecordWriter.write`` serialises."""
    _, target = dataset.load_raw(index)  # decodes once: checks the file and its size
    height, width = target["orig_size"]
    boxes = target["boxes"].double().numpy()
    kept = np.array([a["_clipped"] for a in annotations], np.float64).reshape(-1, 4)
    if kept.shape != boxes.shape or not np.allclose(kept, boxes, atol=1e-3):
        raise AnnotationError(f"{dataset.annotations_json}: image id {target['image_id']}: "
                              "raw annotations out of step with CocoDetection's kept boxes")
    category_ids = [dataset.label_to_category_id[int(label)] for label in target["labels"]]
    path = dataset.image_path(index)
    areas = [float(ann.get("area", (b[2] - b[0]) * (b[3] - b[1]))) for ann, b in zip(annotations, boxes)]
    feature = {
        "image/encoded": (path.read_bytes(), "byte"),  # the original file, never re-encoded
        "image/format": (_image_format(path), "byte"),
        "image/height": (int(height), "int"),
        "image/width": (int(width), "int"),
        "image/filename": (target["file_name"].encode(), "byte"),
        "image/source_id": (str(target["image_id"]).encode(), "byte"),
        "image/object/bbox/xmin": ((boxes[:, 0] / width).tolist(), "float"),
        "image/object/bbox/ymin": ((boxes[:, 1] / height).tolist(), "float"),
        "image/object/bbox/xmax": ((boxes[:, 2] / width).tolist(), "float"),
        "image/object/bbox/ymax": ((boxes[:, 3] / height).tolist(), "float"),
        "image/object/class/label": (category_ids, "int"),
        "image/object/class/text": ([dataset.class_names[int(label)].encode() for label in target["labels"]],
                                    "byte"),
        "image/object/is_crowd": ([int(c) for c in target["iscrowd"]], "int"),
        "image/object/area": (areas, "float"),
    }
    if include_masks:
        feature["image/object/mask"] = (
            [_instance_mask_png(ann.get("segmentation"), box, height, width)
             for ann, box in zip(annotations, boxes)], "byte")
    return feature


def write_coco_tfrecords(images_dir: str | Path, annotations_json: str | Path, out_prefix: str | Path,
                         num_shards: int, *, include_masks: bool = False, overwrite: bool = False) -> list[Path]:
    """Write a COCO folder + json as ``<out_prefix>-0000k-of-0000n.tfrecord`` shards.

    Image ``i`` (in json order) goes to shard ``i % num_shards``, as the TF OD API converter does.
    Boxes are those of :class:`CocoDetection` (clipped to the image, zero-area ones dropped);
    ``area`` is the json's ``area`` field. ``include_masks`` adds one 0/1 PNG per object.
    Shards are written under temporary names and renamed only once all of them are complete, so
    a failure (a bad image, a full disk) never leaves a complete-looking shard. Existing shards
    with this prefix are an error unless ``overwrite``; then the old ones are removed after the
    new ones are in place (a ``PREFIX-*`` pattern would otherwise mix both sets).
    """
    if num_shards < 1:
        raise UsageError(f"num_shards must be at least 1, got {num_shards}")
    dataset = CocoDetection(images_dir, annotations_json)
    extras = _extras_per_image(read_coco_json(annotations_json), dataset)
    out_prefix = Path(out_prefix)
    paths = shard_paths(out_prefix, num_shards)
    existing = sorted(out_prefix.parent.glob(f"{glob.escape(out_prefix.name)}-*-of-*.tfrecord"))
    if existing and not overwrite:
        raise OutputError(f"{existing[0]}: shards with prefix {out_prefix} already exist ({len(existing)} files); "
                          f"use --overwrite to replace them")
    write_round_robin(paths, len(dataset), lambda index: _features(dataset, index, extras[index], include_masks))
    for old in set(existing) - set(paths):
        old.unlink(missing_ok=True)
    log.info("wrote %d images from %s into %d shards %s-*", len(dataset), annotations_json, num_shards,
             out_prefix)
    return paths


def shard_paths(out_prefix: Path, num_shards: int) -> list[Path]:
    """``<out_prefix>-0000k-of-0000n.tfrecord`` for each shard (its folder is made)."""
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    return [out_prefix.parent / f"{out_prefix.name}-{k:05d}-of-{num_shards:05d}.tfrecord" for k in range(num_shards)]


def write_round_robin(paths: Sequence[Path], count: int, example: Callable[[int], dict]) -> None:
    """Write ``example(i)`` for ``i < count`` into shard ``i % len(paths)``. Every shard is written
    under a temporary name and renamed only when all of them are complete (utils.atomic), so a
    crash or a full disk never leaves a complete-looking shard."""
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(atomic_path(p)) for p in paths]
        writers = [TFRecordWriter(str(t)) for t in temps]
        try:
            for index in range(count):
                writers[index % len(paths)].write(example(index))
        finally:
            for writer in writers:
                writer.close()


def category_table_from_coco_json(annotations_json: str | Path) -> tuple[list[int], list[str]]:
    """``(label_to_category_id, class_names)`` of a COCO json, ids ascending (CocoDetection's order)."""
    data = read_coco_json(annotations_json)
    by_id = {int(cat["id"]): str(cat.get("name", cat["id"])) for cat in data["categories"]}
    ids = sorted(by_id)
    return ids, [by_id[cid] for cid in ids]


# -- reading ----------------------------------------------------------------------------------
def _ints(feature: Any, key: str) -> list[int]:
    return list(feature[key].int64_list.value) if key in feature else []


def _floats(feature: Any, key: str) -> np.ndarray:
    return np.asarray(feature[key].float_list.value if key in feature else [], np.float64)


def _bytes(feature: Any, key: str) -> list[bytes]:
    return list(feature[key].bytes_list.value) if key in feature else []


class TFRecordDetection(RawThenTransform):
    """Map-style detection items ``(image, target)`` per docs/CONTRACTS.md from TFRecord shards.

    ``pattern`` is a glob (``/data/coco/train-*``); its shards are read in sorted name order and
    indexed once, here, as ``(shard, byte offset)`` per record, so any sampler can address any
    record (the trainer's sampler thereby splits the shards across ranks and workers).

    Category ids become contiguous labels ``0..C-1`` in ascending id order. The table is
    ``label_to_category_id`` when given; otherwise the ids that occur in the shards, found by
    reading every record once at construction (which also checks every crc). Shards lack ids
    of classes that never occur, so pass the table of the source json for sets with missing
    classes or to save that pass on big sets (:func:`category_table_from_coco_json`).
    Class names: ``class_names`` when given, else ``image/object/class/text`` (found in the same
    pass), else the id as text.

    ``with_masks=True`` builds CocoDetection's semantic ``mask`` (label + 1, 255 for crowd
    regions, large objects first) from the per-object PNGs of ``image/object/mask``.
    ``image_id`` is the ``source_id`` as an int, or the record's index if it is not numeric.
    """

    def __init__(self, pattern: str | Path, transforms: Transform | None = None, *,
                 class_names: Sequence[str] | None = None,
                 label_to_category_id: Sequence[int] | None = None, with_masks: bool = False) -> None:
        self.pattern = str(pattern)
        self.transforms = transforms
        self.with_masks = with_masks
        # The tfrecord package's index files (``.tfindex``) may lie beside the shards.
        self.shards = [Path(p) for p in sorted(glob.glob(self.pattern))
                       if Path(p).is_file() and not p.endswith(".tfindex")]
        if not self.shards:
            raise TFRecordError(f"{self.pattern}: no TFRecord shards match this pattern")
        self.layout = self._layout(self.shards[0])
        if self.layout == "blitznet" and label_to_category_id is None:
            from scaledet.data.voc_files import VOC_CLASSES

            # VOC class indices 1..20 (0 = background in the authors' code)
            label_to_category_id = list(range(1, len(VOC_CLASSES) + 1))
            class_names = list(VOC_CLASSES) if class_names is None else class_names
        scanned_names: dict[int, str] = {}
        shard_of: list[np.ndarray] = []
        offsets: list[np.ndarray] = []
        need_scan = label_to_category_id is None or class_names is None
        for k, shard in enumerate(self.shards):
            found = self._scan(shard, scanned_names) if need_scan else index_shard(shard)
            shard_of.append(np.full(len(found), k, np.int32))
            offsets.append(np.asarray(found, np.int64))
        self._shard_of = np.concatenate(shard_of)
        self._offsets = np.concatenate(offsets)
        if len(self._offsets) == 0:
            raise TFRecordError(f"{self.pattern}: the {len(self.shards)} shards hold no records")
        if label_to_category_id is None:
            label_to_category_id = sorted(scanned_names)
            if not label_to_category_id:
                raise TFRecordError(f"{self.pattern}: no object in any record; pass label_to_category_id")
        self.label_to_category_id: list[int] = [int(c) for c in label_to_category_id]
        if len(set(self.label_to_category_id)) != len(self.label_to_category_id):
            raise DataError(f"label_to_category_id has duplicate ids: {self.label_to_category_id}")
        self.category_id_to_label: dict[int, int] = {
            cid: label for label, cid in enumerate(self.label_to_category_id)}
        if class_names is not None:
            if len(class_names) != len(self.label_to_category_id):
                raise DataError(f"{self.pattern}: {len(self.label_to_category_id)} categories but "
                                 f"{len(class_names)} class_names were given")
            self.class_names = [str(n) for n in class_names]
        else:
            self.class_names = [scanned_names.get(cid) or str(cid) for cid in self.label_to_category_id]

    @staticmethod
    def _layout(shard: Path) -> str:
        """"blitznet" when the first record has the BlitzNet keys, else "od_api"."""
        for offset, data in iter_records(shard):
            feature = _parse(data, shard, offset).features.feature
            return "blitznet" if BLITZNET_KEYS & set(feature.keys()) else "od_api"
        return "od_api"

    @staticmethod
    def _scan(shard: Path, names: dict[int, str]) -> list[int]:
        offsets = []
        for offset, data in iter_records(shard):
            feature = _parse(data, shard, offset).features.feature
            texts = [t.decode("utf-8", "replace") for t in _bytes(feature, "image/object/class/text")]
            for j, cid in enumerate(_ints(feature, "image/object/class/label")):
                text = texts[j] if j < len(texts) else ""
                if text and names.get(cid) and names[cid] != text:
                    raise TFRecordError(f"{shard}: record at byte offset {offset} names category id {cid} "
                                        f"{text!r}, earlier records {names[cid]!r}")
                if text or cid not in names:
                    names[cid] = text
            offsets.append(offset)
        return offsets

    @property
    def num_classes(self) -> int:
        return len(self.label_to_category_id)

    def __len__(self) -> int:
        return len(self._offsets)

    def record_location(self, index: int) -> tuple[Path, int]:
        """``(shard file, byte offset)`` of record ``index``."""
        return self.shards[int(self._shard_of[index])], int(self._offsets[index])

    def _record(self, index: int) -> tuple[Any, str]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        shard, offset = self.record_location(index % len(self))
        return _parse(read_record(shard, offset), shard, offset).features.feature, \
            f"{shard}: record at byte offset {offset}"

    def _objects(self, feature: Any, where: str, height: int, width: int) -> dict[str, torch.Tensor]:
        coords = [_floats(feature, f"image/object/bbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
        category_ids = _ints(feature, "image/object/class/label")
        crowd = _ints(feature, "image/object/is_crowd") or [0] * len(category_ids)
        if not all(len(c) == len(category_ids) for c in coords) or len(crowd) != len(category_ids):
            raise TFRecordError(f"{where}: object lists differ in length (bbox "
                                f"{[len(c) for c in coords]}, class/label {len(category_ids)}, "
                                f"is_crowd {len(crowd)})")
        try:
            labels = [self.category_id_to_label[cid] for cid in category_ids]
        except KeyError as err:
            raise TFRecordError(f"{where}: category id {err.args[0]} is not in label_to_category_id "
                                f"{self.label_to_category_id}") from None
        scale = np.array([width, height, width, height], np.float64)
        boxes = (np.stack(coords, axis=1).reshape(-1, 4) * scale).astype(np.float32)
        return {"boxes": torch.from_numpy(boxes),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "iscrowd": torch.tensor(crowd, dtype=torch.int64).bool()}

    def annotations(self, index: int) -> dict[str, torch.Tensor]:
        """Boxes (xyxy, original pixels), labels and crowd flags, from image/height and /width
        without decoding the image."""
        feature, where = self._record(index)
        height, width = _ints(feature, "image/height")[:1], _ints(feature, "image/width")[:1]
        if not (height and width):
            raise TFRecordError(f"{where} has no image/height or image/width")
        return self._objects(feature, where, height[0], width[0])

    def load_raw(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(uint8 [3,H,W] image, target in original pixels)`` with ``scale == (1.0, 1.0)``."""
        feature, where = self._record(index)
        if "image/encoded" not in feature:
            raise TFRecordError(f"{where} has no image/encoded")
        file_name = (_bytes(feature, "image/filename") or [b""])[0].decode("utf-8", "replace")
        image = decode_image_bytes(feature["image/encoded"].bytes_list.value[0], f"{where} ({file_name})")
        height, width = (int(s) for s in image.shape[-2:])
        stored = (_ints(feature, "image/height")[:1], _ints(feature, "image/width")[:1])
        if stored[0] and stored[1] and (stored[0][0], stored[1][0]) != (height, width):
            raise ImageError(f"{where} ({file_name}): decoded size {height}x{width} (HxW, after EXIF "
                             f"rotation) differs from image/height x image/width {stored[0][0]}x{stored[1][0]}")
        source_id = (_bytes(feature, "image/source_id") or [b""])[0].decode("utf-8", "replace")
        # no source_id in the BlitzNet layout: VOC names as VOCDetection numbers them (2007_000032 -> 2007000032)
        source_id = source_id or Path(file_name).stem.replace("_", "")
        target: dict[str, Any] = {
            **self._objects(feature, where, height, width),
            "image_id": int(source_id) if source_id.strip().lstrip("-").isdigit() else int(index) % len(self),
            "file_name": file_name,
            "orig_size": (height, width),
            "scale": (1.0, 1.0),
        }
        if "image/object/difficulty" in feature:
            difficult = _ints(feature, "image/object/difficulty")
            if len(difficult) != len(target["labels"]):
                raise TFRecordError(f"{where}: {len(difficult)} difficulty flags for {len(target['labels'])} objects")
            target["difficult"] = torch.tensor(difficult, dtype=torch.int64).bool()
        class_map = _bytes(feature, "image/segmentation/encoded")
        if class_map and class_map[0]:
            target["mask"] = self._class_map(class_map[0], height, width, where)
        elif self.layout == "blitznet":  # no mask: every pixel ignored, as VOCDetection does
            target["mask"] = torch.full((height, width), 255, dtype=torch.int64)
        elif self.with_masks:
            target["mask"] = self._semantic_mask(feature, target, where)
        return image, target

    @staticmethod
    def _class_map(png: bytes, height: int, width: int, where: str) -> torch.Tensor:
        try:
            with Image.open(io.BytesIO(png)) as image:
                values = np.asarray(image if image.mode in ("L", "P") else image.convert("L"))
        except OSError as err:
            raise TFRecordError(f"{where}: image/segmentation/encoded is not a readable image ({err})") from None
        if values.shape != (height, width):
            raise TFRecordError(f"{where}: segmentation is {values.shape[0]}x{values.shape[1]}, image {height}x{width}")
        return torch.from_numpy(values.astype(np.int64))

    @staticmethod
    def _semantic_mask(feature: Any, target: dict, where: str) -> torch.Tensor:
        height, width = target["orig_size"]
        pngs = _bytes(feature, "image/object/mask")
        boxes, labels, crowd = target["boxes"].numpy(), target["labels"].numpy(), target["iscrowd"].numpy()
        if len(pngs) != len(boxes):
            raise TFRecordError(f"{where}: {len(pngs)} image/object/mask PNGs for {len(boxes)} objects")
        mask = np.zeros((height, width), np.uint8)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for k in np.argsort(-areas, kind="stable"):  # large first, as CocoDetection does
            with Image.open(io.BytesIO(pngs[k])) as png:
                check_pixel_limit(png.size, where)
                instance = np.asarray(png.convert("L")) > 0
            if instance.shape != (height, width):
                raise TFRecordError(f"{where}: object {k} mask is {instance.shape[0]}x{instance.shape[1]}, "
                                    f"image {height}x{width}")
            mask[instance] = 255 if crowd[k] else int(labels[k]) + 1
        return torch.from_numpy(mask.astype(np.int64))

    def __repr__(self) -> str:
        return (f"TFRecordDetection({self.pattern}: {len(self.shards)} shards, {len(self)} records, "
                f"{self.num_classes} classes)")


def _parse(data: bytes, shard: Path, offset: int) -> example_pb2.Example:
    try:
        return example_pb2.Example.FromString(data)
    except Exception as err:  # protobuf's DecodeError; its module differs between backends
        raise TFRecordError(f"{shard}: record at byte offset {offset} is not a tf.train.Example "
                            f"({type(err).__name__}: {err})") from err
