"""Model-and-input set-up shared by the benchmark scripts (the measuring is ``_harness``)."""
from __future__ import annotations

import argparse

import torch


def add_model_arguments(p: argparse.ArgumentParser, *, model: str = "retinanet_spinenet49s", image_size: int = 640,
                        checkpoint: bool = False) -> None:
    p.add_argument("--model", default=model)
    p.add_argument("--image-size", type=int, default=image_size)
    p.add_argument("--batch", type=int, default=1)
    if checkpoint:
        p.add_argument("--checkpoint", default=None, help="a trained scaledet checkpoint instead of --model")


def build_model(args):
    """A seeded eval-mode ``args.model`` (or the ``args.checkpoint`` model)."""
    from scaledet.registry import create_model

    if getattr(args, "checkpoint", None):
        from scaledet.engine.inference import model_from_checkpoint

        return model_from_checkpoint(args.checkpoint, "cpu").eval()
    torch.manual_seed(0)
    return create_model(args.model).eval()


def inference_setup(args):
    """:func:`build_model` and a seeded random input batch with its image sizes."""
    model = build_model(args)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))
    sizes = torch.tensor([[args.image_size] * 2] * args.batch)
    return model, x, sizes


def inference_call(model, x, sizes):
    """forward + post-processing under ``torch.inference_mode``, as a callable."""
    def run():
        with torch.inference_mode():
            return model.postprocess(model(x), sizes)
    return run
