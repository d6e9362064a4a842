"""``scaledet serve``: an HTTP inference service with dynamic batching and a web page.

``create_app(ServedModel.load(checkpoint=...))`` gives the FastAPI application; the command line
(`scaledet/cli/serve.py`) runs it with uvicorn.
"""
from scaledet.serve.app import ServeSettings, create_app
from scaledet.serve.model import ServedModel

__all__ = ["ServeSettings", "ServedModel", "create_app"]
