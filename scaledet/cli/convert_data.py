"""``scaledet convert-data``: turn data sets into the formats the reference trainers read."""
from __future__ import annotations

import argparse
import sys

from scaledet.cli.main import add_common_arguments
from scaledet.errors import UsageError

_COCO_TO_TFRECORD_EXAMPLE = """\
example:
  scaledet convert-data coco-to-tfrecord \\
      --images coco/train2017 --annotations coco/annotations/instances_train2017.json \\
      --output tfrecords/train --shards 256

writes tfrecords/train-00000-of-00256.tfrecord ... tfrecords/train-00255-of-00256.tfrecord,
the TensorFlow Object Detection API layout the SpineNet TPU code trains on. Read them back with
data.format = "tfrecord" and data.train_pattern = "tfrecords/train-*".
Image i (in json order) goes to shard i % N; the JPEG bytes are copied, never re-encoded.
"""


_VOC_TO_TFRECORD_EXAMPLE = """\
example:
  scaledet convert-data voc-to-tfrecord --root VOCdevkit/VOC2012 \\
      --split ImageSets/Segmentation/train_aug.txt --extra-masks-dir VOCdevkit/VOC2012/SegmentationClassAug \\
      --output tfrecords/voc12-train-segmentation --shards 8

Read them back with data.format = "tfrecord" and data.train_pattern = "tfrecords/voc12-train-segmentation-*";
the authors' own records (voc12-train-segmentation, ...) are read the same way.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-data",
        help="convert data sets (COCO or VOC -> TFRecord shards)",
        description="Convert a data set into another on-disk format.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  scaledet convert-data coco-to-tfrecord --images DIR --annotations JSON "
               "--output PREFIX --shards 32",
    )
    add_common_arguments(parser)
    kinds = parser.add_subparsers(dest="conversion", metavar="CONVERSION", required=True)
    coco = kinds.add_parser(
        "coco-to-tfrecord", help="COCO folder + json -> TF Object Detection API TFRecord shards",
        description="Write a COCO image folder and instances json as sharded TFRecords of "
                    "tf.train.Example (image/encoded, image/object/bbox/*, class/label = category id, ...).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_COCO_TO_TFRECORD_EXAMPLE)
    add_common_arguments(coco)
    coco.add_argument("--images", required=True, metavar="DIR", help="folder of the images")
    coco.add_argument("--annotations", required=True, metavar="JSON", help="COCO instances json")
    coco.add_argument("--output", required=True, metavar="PREFIX",
                      help="shard path prefix; shards are PREFIX-0000k-of-0000N.tfrecord")
    coco.add_argument("--shards", type=int, default=1, metavar="N", help="number of shards (default: 1)")
    coco.add_argument("--overwrite", action="store_true",
                      help="replace existing shards with this prefix (removed only once the new ones are complete)")
    coco.add_argument("--include-masks", action="store_true",
                      help="also write image/object/mask (one PNG per object, from the segmentations)")
    coco.set_defaults(func=run_coco_to_tfrecord)

    voc = kinds.add_parser(
        "voc-to-tfrecord", help="VOC folder -> TFRecord shards in the BlitzNet authors' layout",
        description="Write a VOC split as TFRecords of tf.train.Example in the layout the BlitzNet authors' code "
                    "writes and reads (boxes, class 1..20, image/object/difficulty, image/segmentation/encoded). "
                    "Shards are written under temporary names and renamed when complete.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_VOC_TO_TFRECORD_EXAMPLE)
    add_common_arguments(voc)
    voc.add_argument("--root", required=True, metavar="DIR", help="the VOC20xx folder")
    voc.add_argument("--split", default="Segmentation/train", metavar="SPLIT",
                     help="ImageSets list: a name (Segmentation/train) or a .txt file (default: Segmentation/train)")
    voc.add_argument("--extra-masks-dir", default=None, metavar="DIR",
                     help="SBD masks (SegmentationClassAug) for images without an official one")
    voc.add_argument("--output", required=True, metavar="PREFIX",
                     help="shard path prefix; shards are PREFIX-0000k-of-0000N.tfrecord")
    voc.add_argument("--shards", type=int, default=1, metavar="N", help="number of shards (default: 1)")
    voc.set_defaults(func=run_voc_to_tfrecord)


def run_coco_to_tfrecord(args: argparse.Namespace) -> int:
    from scaledet.data.tfrecord import write_coco_tfrecords

    if args.shards < 1:
        raise UsageError(f"--shards must be at least 1, got {args.shards}")
    paths = write_coco_tfrecords(args.images, args.annotations, args.output, args.shards,
                                 include_masks=args.include_masks, overwrite=args.overwrite)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} shards ({total / 2**20:.1f} MiB): {paths[0]}"
          + (f" ... {paths[-1]}" if len(paths) > 1 else ""), file=sys.stdout)
    return 0


def run_voc_to_tfrecord(args: argparse.Namespace) -> int:
    from scaledet.data.tfrecord_voc import write_voc_tfrecords
    from scaledet.data.voc import VOCDetection

    if args.shards < 1:
        raise UsageError(f"--shards must be at least 1, got {args.shards}")
    dataset = VOCDetection(args.root, split=args.split, extra_masks_dir=args.extra_masks_dir)
    paths = write_voc_tfrecords(dataset, args.output, args.shards)
    print(f"wrote {len(dataset)} images ({dataset.num_masked} with masks) into {len(paths)} shards: {paths[0]}"
          + (f" ... {paths[-1]}" if len(paths) > 1 else ""), file=sys.stdout)
    return 0
