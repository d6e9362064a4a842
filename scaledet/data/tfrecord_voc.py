"""VOC as TFRecords in the BlitzNet authors' layout (docs/reference/BLITZNET.md §8.3), which
:class:`scaledet.data.tfrecord.TFRecordDetection` reads back.

One ``tf.train.Example`` per image: ``image/encoded`` (the JPEG file's bytes, not re-encoded),
``image/format`` ``JPEG``, ``image/height``/``width``, ``image/filename``,
``image/object/bbox/{xmin,ymin,xmax,ymax}`` (the XML's values divided by the image size),
``image/object/class/label`` (1..20; 0 is the background), ``image/object/difficulty`` (0/1) and
``image/segmentation/encoded`` (a single-channel PNG of class indices, 255 = void; all void for an
image without a mask, so it teaches nothing, as in the reference), ``image/segmentation/format``
``PNG``. Shards are written under a temporary name and renamed once complete, so a crash never
leaves a shard that looks finished.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from scaledet.data.tfrecord import shard_paths, write_round_robin
from scaledet.data.voc import VOCDetection
from scaledet.errors import UsageError

__all__ = ["voc_example", "write_voc_tfrecords"]

log = logging.getLogger(__name__)


def _png(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def voc_example(dataset: VOCDetection, index: int) -> dict[str, tuple[Any, str]]:
    """Image ``index`` as the ``{key: (values, kind)}`` dict ``TFRecordWriter.write`` serialises."""
    _, target = dataset.load_raw(index)  # decodes once: checks the file, its size and the mask
    height, width = target["orig_size"]
    boxes = target["boxes"].double().numpy()
    path = dataset.image_path(index)
    return {
        "image/encoded": (path.read_bytes(), "byte"),
        "image/format": (b"JPEG", "byte"),
        "image/height": (int(height), "int"),
        "image/width": (int(width), "int"),
        "image/filename": (path.name.encode(), "byte"),
        "image/object/bbox/xmin": ((boxes[:, 0] / width).tolist(), "float"),
        "image/object/bbox/ymin": ((boxes[:, 1] / height).tolist(), "float"),
        "image/object/bbox/xmax": ((boxes[:, 2] / width).tolist(), "float"),
        "image/object/bbox/ymax": ((boxes[:, 3] / height).tolist(), "float"),
        "image/object/class/label": ([int(label) + 1 for label in target["labels"]], "int"),
        "image/object/difficulty": ([int(d) for d in target["difficult"]], "int"),
        "image/segmentation/encoded": (_png(target["mask"].numpy()), "byte"),
        "image/segmentation/format": (b"PNG", "byte"),
    }


def write_voc_tfrecords(dataset: VOCDetection, out_prefix: str | Path, num_shards: int = 1) -> list[Path]:
    """Write ``<out_prefix>-0000k-of-0000n.tfrecord``; image ``i`` goes to shard ``i % num_shards``
    (shards renamed into place only when all are complete)."""
    if num_shards < 1:
        raise UsageError(f"num_shards must be at least 1, got {num_shards}")
    paths = shard_paths(Path(out_prefix), num_shards)
    write_round_robin(paths, len(dataset), lambda index: voc_example(dataset, index))
    log.info("wrote %d VOC images into %d shards %s-*", len(dataset), num_shards, out_prefix)
    return paths
