"""Build the data sets a config names, with the transforms its model needs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset

from scaledet.config import DataConfig
from scaledet.data.input_spec import InputSpec, eval_transform
from scaledet.data.paths import resolve_data_paths
from scaledet.errors import UsageError

FORMATS = ("synthetic", "coco", "voc", "tfrecord", "mindrecord")
DEFAULT_SYNTHETIC_ROOT = Path("scaledet_data") / "synthetic"


@dataclass
class DataBundle:
    train: Dataset | None
    val: Dataset | None
    class_names: list[str]
    label_to_category_id: list[int] | None  # for COCO results files
    val_annotations: Path | None  # COCO ground truth of the validation split
    val_image_ids: list[int] | None = None  # the images COCO scoring keeps (eval.image_filter); None: all

    def set_transforms(self, cfg: DataConfig, model) -> None:
        """Attach transforms once the model, and so its ``input_spec``, is known."""
        spec: InputSpec = model.input_spec
        if self.train is not None:
            _base(self.train).transforms = train_transform(cfg, spec)
        if self.val is not None:
            _base(self.val).transforms = eval_transform(spec)


def _base(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def train_transform(cfg: DataConfig, spec: InputSpec):
    """The training augmentation ``data.augment`` names, producing inputs as ``spec`` says."""
    if cfg.augment == "ssd":
        from scaledet.data.ssd_transforms import SSDTrainTransform

        return SSDTrainTransform(spec.image_size, spec.pixel_mean, spec.pixel_std)
    if cfg.augment == "port_iou_crop":  # the MindSpore NAS-FPN port's augmentation
        from scaledet.data.port_transforms import PortIoUCropTransform

        return PortIoUCropTransform(spec.image_size, spec.pixel_mean, spec.pixel_std)
    if cfg.augment == "resize":  # no augmentation: the evaluation resize (overfitting checks)
        return eval_transform(spec)
    if cfg.augment == "scale_jitter":
        from scaledet.data.transforms import TrainTransform

        return TrainTransform(spec.image_size, (cfg.scale_min, cfg.scale_max), hflip=cfg.hflip, mean=spec.pixel_mean,
                              std=spec.pixel_std)
    raise UsageError(f"unknown data.augment {cfg.augment!r}; allowed: scale_jitter, ssd, port_iou_crop, resize")


def _require(value, key: str) -> str:
    if not value:
        raise UsageError(f"data.{key} must be set for this data format")
    return value


def _tfrecord_categories(cfg: DataConfig) -> tuple[list[int] | None, list[str] | None]:
    """The category table of TFRecord shards: ``data.category_ids`` (+ ``class_names``), else the
    categories of ``data.val_annotations`` / ``train_annotations``, else ``(None, None)``: the
    shards are then read once through to find the ids that occur."""
    if cfg.category_ids:
        names = list(cfg.class_names) or [str(c) for c in cfg.category_ids]
        if len(names) != len(cfg.category_ids):
            raise UsageError(f"data.class_names has {len(names)} names for {len(cfg.category_ids)} "
                             "data.category_ids")
        return list(cfg.category_ids), names
    source = cfg.val_annotations or cfg.train_annotations
    if source:
        from scaledet.data.tfrecord import category_table_from_coco_json

        return category_table_from_coco_json(source)
    return None, None


def build_datasets(cfg: DataConfig, *, train: bool = True, val: bool = True) -> DataBundle:
    """Data sets without transforms; call ``DataBundle.set_transforms`` once the model exists."""
    if cfg.format not in FORMATS:
        raise UsageError(f"unknown data.format {cfg.format!r}; allowed: {', '.join(FORMATS)}")
    cfg = resolve_data_paths(cfg, train=train, val=val)  # relative paths: under data.root
    train_tf = eval_tf = None
    if cfg.format in ("synthetic", "coco"):
        from scaledet.data.coco import CocoDetection

        if cfg.format == "synthetic":
            from scaledet.data.synthetic import make_synthetic_coco

            paths = make_synthetic_coco(cfg.root or DEFAULT_SYNTHETIC_ROOT, num_train=cfg.synthetic_train,
                                        num_val=cfg.synthetic_val, image_size=cfg.synthetic_image_size)
            train_pair = (paths.train_images, paths.train_json)
            val_pair = (paths.val_images, paths.val_json)
        else:
            train_pair = (cfg.train_images, cfg.train_annotations)
            val_pair = (cfg.val_images, cfg.val_annotations)
        outside = cfg.allow_outside_root
        train_ds = CocoDetection(_require(train_pair[0], "train_images"), _require(train_pair[1], "train_annotations"),
                                 train_tf, allow_outside_root=outside) if train else None
        val_ds = CocoDetection(_require(val_pair[0], "val_images"), _require(val_pair[1], "val_annotations"),
                               eval_tf, allow_outside_root=outside) if val else None
        ref = train_ds or val_ds
        bundle = DataBundle(train_ds, val_ds, ref.class_names, ref.label_to_category_id,
                            Path(val_pair[1]) if val else None)
    elif cfg.format == "voc":
        from scaledet.data.voc import VOCDetection

        root = _require(cfg.root, "root")
        outside = cfg.allow_outside_root
        train_ds = VOCDetection(root, split=cfg.train_split, transforms=train_tf, extra_masks_dir=cfg.extra_masks_dir,
                                allow_outside_root=outside) if train else None
        val_ds = VOCDetection(root, split=cfg.val_split, transforms=eval_tf,
                              allow_outside_root=outside) if val else None
        from scaledet.data.voc import VOC_CLASSES

        bundle = DataBundle(train_ds, val_ds, list(VOC_CLASSES), None, None)
    elif cfg.format == "mindrecord":  # the MindSpore port's files; *_pattern names one shard of each set
        from scaledet.data.mindrecord_dataset import MindRecordDetection

        categories = cfg.val_annotations or cfg.train_annotations  # category ids by name; else COCO 2017's
        train_ds = MindRecordDetection(_require(cfg.train_pattern, "train_pattern"), train_tf,
                                       categories_json=categories) if train else None
        val_ds = MindRecordDetection(_require(cfg.val_pattern, "val_pattern"), eval_tf,
                                     categories_json=categories) if val else None
        ref = train_ds or val_ds
        bundle = DataBundle(train_ds, val_ds, ref.class_names, ref.label_to_category_id,
                            Path(cfg.val_annotations) if val and cfg.val_annotations else None)
    else:
        from scaledet.data.tfrecord import TFRecordDetection

        ids, names = _tfrecord_categories(cfg)
        train_ds = TFRecordDetection(_require(cfg.train_pattern, "train_pattern"), train_tf,
                                     label_to_category_id=ids, class_names=names) if train else None
        val_ds = TFRecordDetection(_require(cfg.val_pattern, "val_pattern"), eval_tf,
                                   label_to_category_id=ids, class_names=names) if val else None
        ref = train_ds or val_ds
        # the SpineNet port's val_json_file: the val-* shards are scored against it
        bundle = DataBundle(train_ds, val_ds, ref.class_names, ref.label_to_category_id,
                            Path(cfg.val_annotations) if val and cfg.val_annotations else None)
    if cfg.max_images and bundle.train is not None:
        bundle.train = Subset(bundle.train, range(min(cfg.max_images, len(bundle.train))))
    return bundle
