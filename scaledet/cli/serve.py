"""``scaledet serve``: an HTTP inference service (FastAPI + uvicorn) with dynamic batching."""
from __future__ import annotations

import ipaddress
import signal
import socket
import sys

from scaledet.cli.common import add_device_argument, add_precision_argument, new_parser
from scaledet.errors import UsageError

EXAMPLE = """  scaledet serve --checkpoint runs/demo/best.pt                # http://127.0.0.1:8000
  scaledet serve --onnx model.onnx --port 8080 --max-batch 16 --max-wait-ms 10
  curl -F image=@street.jpg 'http://127.0.0.1:8000/v1/predict?score_threshold=0.3'
  curl --data-binary @street.jpg http://127.0.0.1:8000/v1/predict

Endpoints: GET / (web page), POST /v1/predict, GET /v1/model, GET /healthz, GET /metrics
(Prometheus). The default bind is loopback only; --host 0.0.0.0 makes the service reachable from
other machines, without any authentication. SIGTERM lets requests in flight finish, then exits.
"""


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "serve", "serve a detector over HTTP, with dynamic batching and a web page", EXAMPLE)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="scaledet checkpoint (PyTorch backend)")
    source.add_argument("--onnx", help="file written by `scaledet export` (ONNX Runtime backend)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default=None,
                   help="default: torch for --checkpoint, onnxruntime for --onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to bind; 0 picks a free one (default 8000)")
    p.add_argument("--max-batch", type=int, default=8, help="most images in one model run; 1 turns batching off (default 8)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long the first image of a batch waits for others (default 5)")
    p.add_argument("--max-queue", type=int, default=256, help="images that may wait; beyond, 503 (default 256)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body in MiB (default 20)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest image, width x height, checked before decoding (default 40,000,000)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of the one model worker (default: torch's choice)")
    p.add_argument("--graceful-timeout", type=int, default=30,
                   help="seconds SIGTERM waits for requests in flight (default 30)")
    p.add_argument("--no-optimize", action="store_true",
                   help="torch backend: keep BatchNorm unfolded and the default memory format")
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not log each request")
    add_precision_argument(p)
    add_device_argument(p)
    p.set_defaults(func=run)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before uvicorn starts so that ``--port 0`` can be reported."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise UsageError(f"--host {host}: cannot resolve it ({err.strerror})") from err
    try:
        return socket.create_server(address[:2], family=family, backlog=2048)
    except OSError as err:
        raise UsageError(f"cannot listen on {host}:{port} ({err.strerror})") from err


def is_loopback(address: str) -> bool:
    """Whether a bound address is reachable from this machine only (0.0.0.0 and :: are not)."""
    return ipaddress.ip_address(address.split("%")[0]).is_loopback


def run(args) -> int:
    import torch
    import uvicorn

    from scaledet.serve import ServeSettings, ServedModel, create_app
    from scaledet.serve.decode import DEFAULT_MAX_PIXELS

    for name in ("max_batch", "max_queue", "max_upload_mb", "threads", "max_pixels"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms must not be negative, got {args.max_wait_ms}")
    if args.threads:
        torch.set_num_threads(args.threads)
    sock = bind(args.host, args.port)  # a busy port fails before the model is loaded
    try:
        model = ServedModel.load(checkpoint=args.checkpoint, onnx=args.onnx, backend=args.backend,
                                 device=args.device, optimize=not args.no_optimize,
                                 precision=args.precision)
        model.warm_up()
    except BaseException:
        sock.close()
        raise
    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                             max_upload_bytes=int(args.max_upload_mb * 2**20),
                             max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    app = create_app(model, settings)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if not is_loopback(host):
        print(f"scaledet serve: warning: listening on {host}, reachable from other machines; "
              "the service has no authentication", file=sys.stderr)
    batching = f"batches of up to {settings.max_batch}, waiting {settings.max_wait_ms:g} ms" \
        if settings.max_batch > 1 else "no batching"
    print(f"scaledet serve: {model.name} ({model.backend}, {torch.get_num_threads()} thread(s), {batching}) "
          f"on http://{shown}:{port}", flush=True)

    stopped_by: list[int] = []
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal once it has put the
    # previous handler back: this one turns that into a normal exit.
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: stopped_by.append(signum))
    try:
        config = uvicorn.Config(app, lifespan="on", access_log=args.access_log,
                                timeout_graceful_shutdown=args.graceful_timeout, log_level="info")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    if stopped_by:
        print("scaledet serve: stopped on SIGTERM after the requests in flight finished", flush=True)
    return 0
