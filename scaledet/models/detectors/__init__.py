"""Importing this package registers every model builder."""
import importlib

# Each module registers its builders with @register_model on import. A family whose module is
# not there yet is simply absent from list_models().
for _module in ("retinanet_spinenet", "retinanet_resnet", "retinanet_port", "blitznet"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{_module}":
            raise
