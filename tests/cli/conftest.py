import pytest

from scaledet.config import load_config, save_config
from scaledet.data.synthetic import make_synthetic_coco
from scaledet.engine.trainer import Trainer


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny model trained for a few steps: its config, checkpoint and data."""
    root = tmp_path_factory.mktemp("cli")
    make_synthetic_coco(root / "data", num_train=8, num_val=4, image_size=128, seed=5)
    cfg = load_config(None, [
        f"data.root={root / 'data'}", "data.synthetic_train=8", "data.synthetic_val=4",
        "data.synthetic_image_size=128", "data.num_workers=0", "model.image_size=128",
        "model.args={head_width: 32, endpoints_num_filters: 32, score_threshold: 0.0}",
        "train.batch_size=4", "train.total_steps=2", "train.checkpoint_every=2", "eval.batch_size=4",
    ])
    save_config(cfg, root / "config.yaml")
    Trainer(cfg, root / "run", progress=False).fit()
    return {"root": root, "config": root / "config.yaml", "checkpoint": root / "run" / "last.pt",
            "val_images": root / "data" / "val"}


@pytest.fixture(scope="session")
def scored_run(trained_run):
    """``trained_run`` with validation ground truth on which its AP is far from 0 and from 1.

    A model trained for two steps scores about 0 AP on the real labels, and an agreement test on
    zeros proves nothing; its scores are also all still the prior 0.01, and among tied scores the
    order of detections is arbitrary. So its class predictor is spread (logits of std 1.5 around
    -2: distinct scores), saved as ``checkpoint``, and the ground truth is made from the model's
    own detections: per image, a few of them (strong and weak ones), shifted by a few pixels, as
    objects. AP then depends on every box and score, and two ways of running the model agree only
    if they give the same detections. Returns trained_run plus that ``checkpoint``, the
    ``config`` scoring against that file and the ``annotations`` path."""
    import json

    import torch

    from scaledet.engine.checkpoint import load_checkpoint, save_atomic
    from scaledet.engine.inference import model_from_checkpoint

    root = trained_run["root"]
    real = json.loads((root / "data" / "annotations" / "instances_val.json").read_text())
    model = model_from_checkpoint(trained_run["checkpoint"])
    predictor = model.head.cls_tower.predictor
    with torch.no_grad():
        predictor.weight.copy_(torch.randn(predictor.weight.shape, generator=torch.Generator().manual_seed(1)))
        logits = torch.cat([t.flatten() for t in model(torch.randn(1, 3, 128, 128))["cls_logits"]])
        predictor.weight.mul_(1.5 / logits.std())
        predictor.bias.fill_(-2.0)
    checkpoint = root / "spread.pt"
    save_atomic({**load_checkpoint(trained_run["checkpoint"]), "model": model.state_dict(), "ema": None}, checkpoint)
    images = sorted(trained_run["val_images"].iterdir())
    by_name = {image["file_name"]: image["id"] for image in real["images"]}
    generator = torch.Generator().manual_seed(0)
    annotations = []
    for path, det in zip(images, model.predict(images, score_threshold=0.0)):
        for rank in (0, 3, 9, 30):  # strong and weak detections become objects
            shifted = det["boxes"][rank] + torch.randint(-3, 4, (4,), generator=generator)
            x0, y0, x1, y1 = shifted.clamp(0, 128).tolist()  # the images are 128 x 128
            w, h = max(x1 - x0, 4.0), max(y1 - y0, 4.0)
            annotations.append({"id": len(annotations) + 1, "image_id": by_name[path.name], "iscrowd": 0,
                                "category_id": model.label_to_category_id[int(det["labels"][rank])],
                                "bbox": [x0, y0, w, h], "area": w * h})
    pseudo = root / "val_pseudo.json"
    pseudo.write_text(json.dumps({**real, "annotations": annotations}))
    cfg = load_config(trained_run["config"], [
        "data.format=coco", "data.train_images=train", "data.train_annotations=annotations/instances_train.json",
        "data.val_images=val", f"data.val_annotations={pseudo}"])
    save_config(cfg, root / "config_pseudo.yaml")
    return {**trained_run, "checkpoint": checkpoint, "config": root / "config_pseudo.yaml", "annotations": pseudo}
