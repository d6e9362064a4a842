"""``scaledet eval-results``: score saved detections against ground truth (COCO or VOC)."""
from __future__ import annotations

import argparse
import json

from scaledet.cli.common import new_parser
from scaledet.errors import DataError, UsageError

_COCO_EXAMPLE = """\
  scaledet eval-results coco \\
      --annotations annotations/instances_val2017.json \\
      --results detections_val2017.json --iou-type bbox --json

The results file is a JSON list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}
(or "segmentation" as RLE for --iou-type segm): the COCO results format.
Statistics are those of pycocotools' COCOeval, computed with faster-coco-eval.
"""

_VOC_EXAMPLE = """\
  scaledet eval-results voc \\
      --annotations VOCdevkit/VOC2007/Annotations \\
      --image-set VOCdevkit/VOC2007/ImageSets/Main/test.txt \\
      --results results/VOC2007/Main --metric 11point --json

The results folder holds one devkit file per class, e.g. comp4_det_test_car.txt, whose lines are
"image_id score xmin ymin xmax ymax". In descending score order, a detection is a true positive when
its best-overlapping ground-truth box has IoU strictly greater than --iou (as in the VOC devkit) and
was not claimed by a higher-scoring detection; detections of difficult objects are ignored.
Use --metric 11point for VOC2007 numbers and --metric area for VOC2010+.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = new_parser(subparsers, "eval-results", "compute COCO or VOC metrics for saved detections",
                        "  scaledet eval-results coco --annotations GT.json --results RES.json\n"
                        "  scaledet eval-results voc --annotations VOC2007/Annotations --results DIR\n")
    kinds = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)

    coco = new_parser(kinds, "coco", "COCO AP/AR: the 12 statistics of COCOeval.summarize()", _COCO_EXAMPLE)
    coco.add_argument("--annotations", required=True, metavar="GT.json",
                      help="COCO ground-truth annotation file")
    coco.add_argument("--results", required=True, metavar="RES.json",
                      help="COCO results file (JSON list of detections)")
    coco.add_argument("--iou-type", choices=("bbox", "segm"), default="bbox",
                      help="match boxes or masks (default: bbox)")
    coco.add_argument("--json", action="store_true",
                      help='print one JSON object {"AP": ..., "ARl": ...} instead of the table')
    coco.set_defaults(func=run_coco)

    voc = new_parser(kinds, "voc", "PASCAL VOC detection AP per class and mAP", _VOC_EXAMPLE)
    voc.add_argument("--annotations", required=True, metavar="XML_DIR",
                     help="folder of VOC .xml files (or a VOC root containing Annotations/)")
    voc.add_argument("--results", required=True, metavar="DIR",
                     help="folder of devkit detection files <comp>_det_<set>_<class>.txt")
    voc.add_argument("--image-set", default=None, metavar="LIST.txt",
                     help="evaluate only the image ids listed in this file, one per line "
                          "(e.g. ImageSets/Main/test.txt; default: every .xml file)")
    voc.add_argument("--metric", choices=("11point", "area"), default="area",
                     help="11point = VOC2007, area = VOC2010+ all-point AP (default: area)")
    voc.add_argument("--iou", type=float, default=0.5,
                     help="IoU a match must exceed (default: 0.5)")
    voc.add_argument("--plus-one", action="store_true",
                     help="use the devkit's inclusive pixel convention (width = x2 - x1 + 1)")
    voc.add_argument("--classes", default=None, metavar="A,B,...",
                     help="comma-separated class names (default: the 20 VOC classes)")
    voc.add_argument("--json", action="store_true",
                     help='print {"mAP": ..., "per_class": {...}} instead of the table')
    voc.set_defaults(func=run_voc)


def run_coco(args: argparse.Namespace) -> int:
    from scaledet.eval.coco import evaluate_coco, format_coco_table

    stats = evaluate_coco(args.annotations, args.results, iou_type=args.iou_type)
    print(json.dumps(stats) if args.json else format_coco_table(stats))
    return 0


def run_voc(args: argparse.Namespace) -> int:
    from scaledet.data.names import contained_name
    from scaledet.data.voc_files import read_image_set
    from scaledet.eval.base import json_safe
    from scaledet.eval.voc import (VOC_CLASSES, evaluate_voc, format_voc_table,
                                   read_voc_annotations, read_voc_detections)

    if not 0.0 <= args.iou < 1.0:
        raise UsageError(f"--iou must be in [0, 1), got {args.iou}")
    classes = (tuple(c.strip() for c in args.classes.split(",") if c.strip())
               if args.classes else VOC_CLASSES)
    image_ids = ([contained_name(i, f"{args.image_set}: image id") for i in read_image_set(args.image_set)]
                 if args.image_set is not None else None)
    annotations = read_voc_annotations(args.annotations, image_ids)
    unknown = {name for ann in annotations.values() for name in ann.names} - set(classes)
    if unknown:
        raise DataError(f"{args.annotations}: objects of classes not in the class list "
                         f"({', '.join(sorted(unknown))}); pass them with --classes")
    detections = read_voc_detections(args.results, classes, known_image_ids=annotations)
    result = evaluate_voc(annotations, detections, classes, metric=args.metric,
                          iou_threshold=args.iou, plus_one=args.plus_one)
    if args.json:  # NaN (a class without objects) is not valid JSON: null instead
        print(json.dumps(json_safe({"mAP": result["mAP"], "per_class": result["per_class"]})))
    else:
        print(format_voc_table(result))
    return 0
