"""The metric names each evaluator reports, importable without the metric libraries: the config
checks ``train.keep_best`` against them when it loads."""
from __future__ import annotations

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                   "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
VOC_METRIC_NAMES = ("mAP", "mIoU", "pixel_acc")

# eval.metric -> the names in its EvalResult.metrics
METRIC_NAMES = {"coco": COCO_STAT_NAMES, "voc": VOC_METRIC_NAMES}
