"""Make the TF2 Model Garden RetinaNet fixtures in tests/fixtures/tf2_model_garden/.

This script runs TensorFlow Model Garden (tf-models-official 2.20.0) itself; it installs nothing.
Run it with a Python that has tensorflow-cpu 2.20 and tf-models-official 2.20.0, e.g.::

    python -m venv /work/venvs/tf
    /work/venvs/tf/bin/pip install tensorflow-cpu==2.20.0
    /work/venvs/tf/bin/pip install --no-deps tf-keras==2.20.1 tf-models-official==2.20.0
    /work/venvs/tf/bin/pip install pyyaml gin-config immutabledict tensorflow-datasets tf-slim \
        scipy pycocotools opencv-python-headless matplotlib
    TF_USE_LEGACY_KERAS=1 TF_ENABLE_ONEDNN_OPTS=0 /work/venvs/tf/bin/python tools/make_tf2_fixtures.py \
        --coco-tiny ../shared/data/coco_tiny --out tests/fixtures/tf2_model_garden

(``--no-deps`` because tf-models-official pins the full ``tensorflow`` and ``tensorflow-text``
wheels and tf-keras the full ``tensorflow``; the vision code needs only what is listed.)
Without ``--only`` it makes both narrow models and the variable lists (the full-size models take
most of an hour on 2 busy cores); ``--only spinenet --only nasfpn`` takes a few minutes.

For each of two narrow RetinaNets -- SpineNet (a narrow 49S) and ResNet-50 + NAS-FPN -- it builds
the model with Model Garden's own factory, gives it random weights and input-dependent BN
statistics, saves it with ``tf.train.CheckpointManager`` (``model/...`` keys, as Model Garden's
trainer does), and records the raw outputs on two coco_tiny images preprocessed by Model Garden's
eval-parser functions. ``--only varlists`` lists the variables (checkpoint key, shape, Keras
variable name) of the full-size models; no weights are kept for those.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from official.core import exp_factory  # noqa: E402
from official.vision import registry_imports  # noqa: E402,F401  (registers the experiments)
from official.vision.configs import backbones as backbone_cfg  # noqa: E402
from official.vision.configs import decoders as decoder_cfg  # noqa: E402
from official.vision.modeling import factory  # noqa: E402
from official.vision.modeling.backbones import spinenet as mg_spinenet  # noqa: E402
from official.vision.ops import anchor, preprocess_ops  # noqa: E402

IMAGE_SIZE = 128
NUM_CLASSES = 11  # background + COCO category ids 1..10; keeps the class outputs small
FIXTURE_IMAGES = ("val2017/000000005001.jpg", "val2017/000000349184.jpg")
CALIBRATION_TRAIN_IMAGES = 14
SEED = 1

# A narrow 49S: the 49S block table and resampling, widths scaled down (as the tpu fixture does).
NARROW_SPINENET = {"endpoints_num_filters": 16, "filter_size_scale": 0.08, "resample_alpha": 0.5,
                   "block_repeats": 1}


# -- model configurations ---------------------------------------------------------------------
def spinenet_config(model_id: str, *, num_classes: int, head_filters: int, head_convs: int = 4,
                    anchor_size: float = 3.0, image_size: int = IMAGE_SIZE):
    config = exp_factory.get_exp_config("retinanet_spinenet_coco").task.model
    config.backbone.spinenet.model_id = model_id
    config.backbone.spinenet.stochastic_depth_drop_rate = 0.0  # inactive in eval; keeps calibration deterministic
    config.head.num_filters = head_filters
    config.head.num_convs = head_convs
    config.anchor.anchor_size = anchor_size
    config.num_classes = num_classes
    config.input_size = [image_size, image_size, 3]
    return config


def nasfpn_config(*, depth_multiplier: float, num_filters: int, num_repeats: int, head_filters: int,
                  num_classes: int, image_size: int = IMAGE_SIZE):
    config = exp_factory.get_exp_config("retinanet_resnetfpn_coco").task.model
    config.backbone = backbone_cfg.Backbone(
        type="resnet", resnet=backbone_cfg.ResNet(model_id=50, depth_multiplier=depth_multiplier))
    config.decoder = decoder_cfg.Decoder(
        type="nasfpn", nasfpn=decoder_cfg.NASFPN(num_filters=num_filters, num_repeats=num_repeats))
    config.head.num_filters = head_filters
    config.num_classes = num_classes
    config.input_size = [image_size, image_size, 3]
    return config


NARROW_MODELS = {
    "spinenet": lambda: spinenet_config("49S_narrow", num_classes=NUM_CLASSES, head_filters=16),
    # Model Garden resamples every NAS-FPN cell input to 256 channels (a 1x1 conv + BN whenever
    # num_filters != 256), so the cells stay 256 wide inside; num_filters 4 keeps that small.
    "nasfpn": lambda: nasfpn_config(depth_multiplier=0.0625, num_filters=4, num_repeats=1, head_filters=8,
                                    num_classes=NUM_CLASSES),
}

# Full-size models whose variable lists are recorded. 49S has no Model Garden yaml; it takes the
# tpu yaml's head (4 x 128). The others follow Model Garden's coco_spinenet*_tpu yaml files.
FULL_MODELS = {
    "spinenet49S": lambda: spinenet_config("49S", num_classes=91, head_filters=128, image_size=256),
    "spinenet49": lambda: spinenet_config("49", num_classes=91, head_filters=256, image_size=256),
    "spinenet96": lambda: spinenet_config("96", num_classes=91, head_filters=256, image_size=256),
    "spinenet143": lambda: spinenet_config("143", num_classes=91, head_filters=256, anchor_size=4.0,
                                           image_size=256),
    "spinenet190": lambda: spinenet_config("190", num_classes=91, head_filters=512, head_convs=7,
                                           anchor_size=4.0, image_size=256),
    "nasfpn_r50_7x256": lambda: nasfpn_config(depth_multiplier=1.0, num_filters=256, num_repeats=7,
                                              head_filters=256, num_classes=91, image_size=256),
}


def build(config) -> tf_keras.Model:
    size = config.input_size
    tf_keras.backend.clear_session()  # fresh Keras name counters for every model
    model = factory.build_retinanet(tf_keras.layers.InputSpec(shape=[None, size[0], size[1], 3]), config)
    # The head is built lazily on its first call (with an identity decoder), so call once.
    model(tf.zeros([1, size[0], size[1], 3]), training=False)
    return model


# -- inputs -----------------------------------------------------------------------------------
def preprocess(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Model Garden's eval parser steps (retinanet_input.Parser._parse_eval_data)."""
    image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
    image = preprocess_ops.normalize_image(image)
    padded = preprocess_ops.compute_padded_size([size, size], 2 ** 7)
    image, info = preprocess_ops.resize_and_crop_image(image, [size, size], padded_size=padded,
                                                       aug_scale_min=1.0, aug_scale_max=1.0)
    return image.numpy(), info.numpy()


# -- weights ----------------------------------------------------------------------------------
def batch_norms(model) -> list:
    # Duck-typed: the head's SyncBatchNormalization does not subclass BatchNormalization.
    return [m for m in model.submodules if hasattr(m, "moving_variance") and hasattr(m, "gamma")]


def randomize(model, rng: np.random.Generator) -> None:
    """Move every weight away from values a wrong converter could still pass with."""
    for bn in batch_norms(model):
        bn.gamma.assign(rng.uniform(0.5, 1.5, bn.gamma.shape).astype(np.float32))
        bn.beta.assign(rng.normal(0.0, 0.2, bn.beta.shape).astype(np.float32))
    for variable in model.trainable_variables:
        if variable.name.split("/")[-1].startswith("bias"):
            variable.assign(rng.normal(0.0, 0.1, variable.shape).astype(np.float32))
    head = model.head
    for predictor in (head._classifier, head._box_regressor):
        kernel = predictor.kernel
        fan_in = int(np.prod(kernel.shape[:3]))
        std = 0.6 / np.sqrt(fan_in)
        kernel.assign(np.clip(rng.normal(0.0, std, kernel.shape), -2 * std, 2 * std).astype(np.float32))
    bias = head._classifier.bias
    bias.assign((-np.log(99.0) + rng.normal(0.0, 0.5, bias.shape)).astype(np.float32))


def float64_copy(model, config, size: int | None = None):
    """The same weights in a float64 model (optionally for another input size): a reference free of
    float32 rounding, so a port run in float64 can be held to a tolerance far below float32 noise."""
    config = config.replace(input_size=[size, size, 3]) if size else config
    tf_keras.backend.set_floatx("float64")
    try:
        copy = build(config)
    finally:
        tf_keras.backend.set_floatx("float32")
    assert [v.shape for v in copy.variables] == [v.shape for v in model.variables]
    for variable, value in zip(copy.variables, model.variables):
        variable.assign(tf.cast(value, tf.float64))
    return copy


def named_outputs(model, images: np.ndarray, min_level: int) -> dict[str, np.ndarray]:
    """``backbone_l*``, ``decoder_l*`` (when there is a decoder), ``cls_l*``, ``box_l*`` as numpy."""
    batch = tf.constant(images)
    features = model.backbone(batch, training=False)
    out = {f"backbone_l{k}": v.numpy() for k, v in features.items() if int(k) >= min_level}
    if model.decoder is not None:
        features = model.decoder(features, training=False)
        out.update({f"decoder_l{k}": v.numpy() for k, v in features.items()})
    scores, boxes, _ = model.head(features, training=False)
    out.update({f"cls_l{k}": v.numpy() for k, v in scores.items()})
    out.update({f"box_l{k}": v.numpy() for k, v in boxes.items()})
    return out


def calibrate(model, images: np.ndarray, rng: np.random.Generator) -> None:
    """Moving stats = the statistics of each BN's input in inference mode, then jittered a little.

    Inference-mode statistics keep every layer's output near gamma * N(0, 1) + beta, so the outputs
    stay O(1) and float32 rounding stays small. In one eager inference pass every BN, when it is
    called (so after all BNs before it), first takes the mean and variance of its own input.
    """
    norms = batch_norms(model)
    calls = {}
    for bn in norms:
        calls[id(bn)] = bn.call

        def calibrating_call(inputs, *args, _bn=bn, _call=bn.call, **kwargs):
            mean, var = tf.nn.moments(tf.cast(inputs, tf.float64), axes=[0, 1, 2])
            _bn.moving_mean.assign(tf.cast(mean, tf.float32))
            _bn.moving_variance.assign(tf.cast(var, tf.float32))
            return _call(inputs, *args, **kwargs)

        bn.call = calibrating_call
    named_outputs(model, images, min_level=0)
    for bn in norms:
        bn.call = calls[id(bn)]
        var = bn.moving_variance.numpy()
        mean = bn.moving_mean.numpy() + rng.normal(0.0, 0.05, var.shape) * np.sqrt(var)
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign((var * rng.uniform(0.8, 1.25, var.shape)).astype(np.float32))


# -- recording --------------------------------------------------------------------------------
def variable_rows(prefix: str) -> list[tuple[str, list[int], str, str]]:
    """(checkpoint key, shape, dtype, Keras variable name) of every saved tensor."""
    reader = tf.train.load_checkpoint(prefix)
    graph = reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    from tensorflow.core.protobuf import trackable_object_graph_pb2
    proto = trackable_object_graph_pb2.TrackableObjectGraph()
    proto.ParseFromString(graph)
    full_names = {a.checkpoint_key: a.full_name for node in proto.nodes for a in node.attributes}
    dtypes = reader.get_variable_to_dtype_map()
    shapes = reader.get_variable_to_shape_map()
    return [(key, list(shapes[key]), dtypes[key].name, full_names.get(key, ""))
            for key in sorted(shapes) if key != "_CHECKPOINTABLE_OBJECT_GRAPH"]


def write_tsv(rows, path: Path) -> None:
    """A gzipped TSV: the keys are long and repetitive, so this keeps the fixtures small."""
    with gzip.open(path, "wt") as handle:
        handle.write("key\tshape\tdtype\tfull_name\n")
        for key, shape, dtype, full_name in rows:
            handle.write(f"{key}\t{','.join(map(str, shape))}\t{dtype}\t{full_name}\n")


def stats(array: np.ndarray) -> dict:
    return {"shape": list(array.shape), "min": float(array.min()), "max": float(array.max()),
            "mean": float(array.mean()), "std": float(array.std())}


def make_narrow(name: str, out: Path, coco: Path) -> None:
    config = NARROW_MODELS[name]()
    model = build(config)
    rng = np.random.default_rng(SEED)
    size = IMAGE_SIZE
    fixture = [preprocess(coco / f, size) for f in FIXTURE_IMAGES]
    calibration_files = sorted((coco / "train2017").glob("*.jpg"))[:CALIBRATION_TRAIN_IMAGES]
    calibration = np.stack([img for img, _ in fixture] + [preprocess(p, size)[0] for p in calibration_files])
    randomize(model, rng)
    calibrate(model, calibration, np.random.default_rng(SEED + 1000))

    images = np.stack([img for img, _ in fixture]).astype(np.float32)
    info = np.stack([i for _, i in fixture]).astype(np.float32)
    arrays = named_outputs(model, images, config.min_level)
    outputs = model(tf.constant(images), image_shape=tf.constant(info[:, 1, :]), training=False)
    detections = {k: outputs[k].numpy() for k in ("num_detections", "detection_boxes", "detection_scores",
                                                   "detection_classes")}
    detections["image_info"] = info
    anchors = anchor.Anchor(min_level=config.min_level, max_level=config.max_level,
                            num_scales=config.anchor.num_scales, aspect_ratios=config.anchor.aspect_ratios,
                            anchor_size=config.anchor.anchor_size, image_size=(size, size)).multilevel_boxes

    # The same weights in a float64 copy of the model: a reference free of float32 rounding, so a
    # port run in float64 can be held to a tolerance far below the network's float32 noise.
    arrays64 = named_outputs(float64_copy(model, config), images.astype(np.float64), config.min_level)
    # At 128 px SpineNet's 8x down path ends in a 1x1 map, where one 5x5/4 pool and two 3x3/2 pools
    # both take the global max; the 2x-upsampled images (256 px) tell them apart.
    larger = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2).astype(np.float64)
    arrays64_256 = {k: v for k, v in named_outputs(float64_copy(model, config, 2 * size), larger,
                                                    config.min_level).items() if k.startswith("backbone_")}

    target = out / name
    target.mkdir(parents=True, exist_ok=True)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(target / "ckpt"), max_to_keep=1)
    prefix = manager.save()
    reloaded = build(config)
    tf.train.Checkpoint(model=reloaded).restore(prefix).assert_existing_objects_matched()
    again = reloaded(tf.constant(images), training=False)
    reload_max_diff = max(float(np.abs(again["cls_outputs"][k].numpy() - arrays[f"cls_l{k}"]).max())
                          for k in again["cls_outputs"])

    np.save(out / "inputs.npy", images)  # the same two preprocessed images for every model
    np.savez_compressed(target / "outputs.npz", **arrays)
    # Rounded to float32 for storage: 6e-8 relative, far below the tolerances that use them.
    np.savez_compressed(target / "outputs_float64.npz", **{k: v.astype(np.float32) for k, v in arrays64.items()})
    if name == "spinenet":
        np.savez_compressed(target / "outputs_float64_256.npz",
                            **{k: v.astype(np.float32) for k, v in arrays64_256.items()})
    np.savez_compressed(target / "detections.npz", **detections)
    np.savez_compressed(target / "anchors.npz",
                        **{f"anchors_l{k}": v.numpy().reshape(-1, 4) for k, v in anchors.items()})
    write_tsv(variable_rows(prefix), target / "ckpt_variables.tsv.gz")
    manifest = {
        "config": config.as_dict(),
        "narrow_spinenet_scaling": NARROW_SPINENET if name == "spinenet" else None,
        "images": [{"file": f, "sha256": hashlib.sha256((coco / f).read_bytes()).hexdigest(),
                    "image_info": i.tolist()} for f, (_, i) in zip(FIXTURE_IMAGES, fixture)],
        "calibration_images": [p.name for p in calibration_files],
        "seeds": {"tf_keras.utils.set_random_seed": SEED, "numpy weights": SEED, "numpy bn jitter": SEED + 1000},
        "checkpoint_prefix": Path(prefix).name,
        "reload_max_abs_diff_cls": reload_max_diff,
        "float32_vs_float64_max_abs_diff": {k: float(np.abs(arrays[k] - v).max()) for k, v in arrays64.items()},
        "float64_256_input_dependence": {k: float(np.abs(v[0] - v[1]).mean()) for k, v in arrays64_256.items()},
        "input_dependence_mean_abs_diff": {k: float(np.abs(v[0] - v[1]).mean()) for k, v in arrays.items()},
        "outputs": {k: stats(v) for k, v in arrays.items()},
        "num_detections": detections["num_detections"].tolist(),
        "versions": {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
                     "tf-models-official": _version("tf-models-official"), "numpy": np.__version__,
                     "python": sys.version.split()[0]},
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    print(f"{name}: {len(model.variables)} variables, reload max |diff| {reload_max_diff:.3g}, "
          f"detections {detections['num_detections'].tolist()}")


def _version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


def make_varlists(out: Path) -> None:
    target = out / "varlists"
    target.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, make_config in FULL_MODELS.items():
        config = make_config()
        model = build(config)
        with tempfile.TemporaryDirectory() as tmp:
            prefix = tf.train.Checkpoint(model=model).write(os.path.join(tmp, "ckpt"))
            rows = variable_rows(prefix)
        write_tsv(rows, target / f"{name}.tsv.gz")
        summary[name] = {"num_variables": len(rows),
                         "num_values": int(sum(np.prod(r[1]) for r in rows)),
                         "num_trainable_values": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
                         "config": config.as_dict()}
        print(f"{name}: {len(rows)} variables")
    (target / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-tiny", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", choices=["spinenet", "nasfpn", "varlists"], action="append")
    args = parser.parse_args()
    tf_keras.utils.set_random_seed(SEED)
    mg_spinenet.SCALING_MAP["49S_narrow"] = dict(NARROW_SPINENET)
    for name in args.only or ["spinenet", "nasfpn", "varlists"]:
        tf_keras.utils.set_random_seed(SEED)
        if name == "varlists":
            make_varlists(args.out)
        else:
            make_narrow(name, args.out, args.coco_tiny)


if __name__ == "__main__":
    main()
