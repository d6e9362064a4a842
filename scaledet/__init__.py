"""scaledet: multi-scale object detectors (SpineNet, NAS-FPN, BlitzNet) in PyTorch."""
__version__ = "0.1.0"

from scaledet.registry import create_model, list_models  # noqa: E402

__all__ = ["create_model", "list_models", "__version__"]
