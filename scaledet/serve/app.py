"""The FastAPI application: prediction API, model description, health, metrics and the web page."""
from __future__ import annotations

import asyncio
import base64
import io
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from scaledet.serve.batcher import BatchedResult, DynamicBatcher, QueueFull
from scaledet.serve.decode import DEFAULT_MAX_PIXELS, UploadError, decode_upload
from scaledet.serve.metrics import ServiceMetrics
from scaledet.serve.middleware import BodySizeLimit, RequestMetrics
from scaledet.serve.model import ServedModel

STATIC = Path(__file__).parent / "static"
# Only the page's own files may load: no CDN, no inline script; images come from the user's file.
PAGE_POLICY = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'"


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = DEFAULT_MAX_PIXELS


def _score_threshold(value: str | float | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = math.nan
    if not 0.0 <= threshold <= 1.0:
        raise UploadError(400, "bad_parameter", f"score_threshold must be a number in [0, 1], got {value!r}")
    return threshold


async def _read_upload(request: Request) -> tuple[bytes, str, str | None]:
    """(image bytes, a name for messages, score_threshold given as a form field) from a multipart
    form (field ``image``, or the only file) or from the raw body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            files = [value for value in form.values() if not isinstance(value, str)]
            upload = files[0] if files else None
        if upload is None:
            raise UploadError(400, "empty", "multipart body holds no file; send it in the field 'image'")
        threshold = form.get("score_threshold")
        return await upload.read(), upload.filename or "upload", threshold if isinstance(threshold, str) else None
    return await request.body(), "body", None


def _mask_png_base64(mask: torch.Tensor) -> str:
    values = mask.numpy()
    image = Image.fromarray(values.astype("uint8"), "L") if values.max(initial=0) < 256 else \
        Image.fromarray(values.astype("uint16"), "I;16")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def detections_json(output: dict[str, torch.Tensor], class_names: list[str],
                    score_threshold: float | None) -> list[dict]:
    scores = output["scores"]
    keep = torch.ones_like(scores, dtype=torch.bool) if score_threshold is None else scores >= score_threshold
    return [{"box": [float(v) for v in box], "score": float(score), "label": int(label),
             "class_name": class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))}
            for box, score, label in zip(output["boxes"][keep].tolist(), scores[keep].tolist(),
                                         output["labels"][keep].tolist())]


def create_app(model: ServedModel, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The service for one loaded model; the batcher starts and stops with the app's lifespan."""
    metrics = ServiceMetrics()
    batcher = DynamicBatcher(model.predict_batch, max_batch=settings.max_batch,
                             max_wait_s=settings.max_wait_ms / 1000.0, max_queue=settings.max_queue,
                             on_batch=metrics.record_batch)
    # Decoding (and mask encoding) runs on one thread of its own beside the model's, not in a pool
    # that grows with load.
    decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scaledet-decode")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            decoder.shutdown(wait=True)

    app = FastAPI(title="scaledet serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.model = model
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.batcher = batcher
    app.state.in_flight = 0

    def refuse(status: int, kind: str, message: str) -> JSONResponse:
        metrics.errors.labels(kind).inc()
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(UploadError)
    async def upload_error(_request: Request, err: UploadError) -> JSONResponse:
        return refuse(err.status, err.kind, str(err))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return refuse(err.status_code, f"http_{err.status_code}", str(err.detail).splitlines()[0])

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body"))
        return refuse(400, "bad_parameter", f"{where}: {first.get('msg')}" if where else str(first.get("msg")))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, err: Exception) -> JSONResponse:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        return refuse(500, "internal", f"internal error: {message}")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "predictions_in_flight": app.state.in_flight, "images_waiting": batcher.waiting}

    @app.get("/v1/model")
    async def model_info() -> dict:
        return {**asdict(model.info()), "threads": torch.get_num_threads(), "max_batch": settings.max_batch,
                "max_wait_ms": settings.max_wait_ms, "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        metrics.waiting.set(batcher.waiting)
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/v1/predict")
    async def predict(request: Request,
                      score_threshold: float | None = Query(None, ge=0.0, le=1.0,
                                                            description="drop detections scoring below it")):
        """An image as the raw body or as the multipart field ``image``; detections in its pixels."""
        app.state.in_flight += 1
        metrics.in_flight.inc()
        try:
            return await _predict(request, score_threshold)
        finally:
            app.state.in_flight -= 1
            metrics.in_flight.dec()

    async def _predict(request: Request, score_threshold: float | None):
        data, name, form_threshold = await _read_upload(request)
        threshold = score_threshold if score_threshold is not None else _score_threshold(form_threshold)
        loop = asyncio.get_running_loop()
        image = await loop.run_in_executor(decoder, decode_upload, data, settings.max_pixels, name)
        try:
            result: BatchedResult = await batcher.submit(image)
        except QueueFull as err:
            return refuse(503, "overloaded", str(err))
        metrics.queue_seconds.observe(result.wait_s)
        body = {"model": model.name, "image": {"width": int(image.shape[-1]), "height": int(image.shape[-2])},
                "score_threshold": threshold,
                "detections": detections_json(result.output, model.class_names, threshold),
                "batch_size": result.batch_size,
                "timing_ms": {"queued": round(result.wait_s * 1e3, 3), "model": round(result.run_s * 1e3, 3)}}
        if "masks" in result.output:
            png = await loop.run_in_executor(decoder, _mask_png_base64, result.output["masks"])
            body["mask"] = {"format": "png", "encoding": "base64", "values": "0 background, k+1 class k",
                            "data": png}
        return JSONResponse(body)  # plain JSON types already: skip FastAPI's generic encoder

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    paths = ["/", "/healthz", "/v1/model", "/v1/predict", "/metrics", "/openapi.json"]
    paths += [f"/static/{p.name}" for p in STATIC.iterdir()]
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes, metrics=metrics)
    app.add_middleware(RequestMetrics, metrics=metrics, paths=paths)
    return app
