"""The HTTP side of `dlmine serve`: FastAPI routes over a `Service`, run by uvicorn.

Every route answers JSON; a `DlmineError` is its message as `{"detail": ...}` with 422 (bad
input), 413 (a body over the limit) or 404 (an endpoint this run does not answer), and
anything else is a 500 that says it is a bug: no request stops the server. FastAPI and
uvicorn are the optional extra `dlmine[serve]`, imported inside the functions that use them.

No `from __future__ import annotations` here: FastAPI reads the routes' annotations (`Request`,
imported inside `create_app`) at run time.
"""

import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import sys
import traceback
from pathlib import Path

from dlmine import __version__
from dlmine.backend.runtime import import_keras
from dlmine.errors import DlmineError
from dlmine.results.serve import MAX_BATCH, WINDOW_S, NotHere, Service, TooLarge

ENV = "DLMINE_SERVE"  # run dir, checkpoint and body limit of each worker process, as JSON
EXAMPLES = {
    "/predict": {"inputs": ["one raw sample per item: see GET /metadata"]},
    "/recommend": {"users": ["u1"], "k": 10, "include_seen": False, "cold_start": "error"},
    "/similar": {"item": "i1", "k": 10},
}
SUMMARIES = {
    "/predict": "Predict raw inputs as `dlmine predict` does: one row per sample.",
    "/recommend": "The top k items of each user, as `dlmine recommend` writes them.",
    "/similar": "The k items nearest to an item, as `dlmine similar` writes them.",
}


def require_extra() -> None:
    """Refuse clearly when `dlmine[serve]` is not installed."""
    for module in ("fastapi", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            raise DlmineError(f"dlmine serve needs {module}: pip install 'dlmine[serve]'") from None


def create_app(service: Service, max_body: int):
    """The FastAPI app of `service`: GET /health, /metadata; POST /predict, /recommend,
    /similar; OpenAPI at /openapi.json and /docs."""
    from fastapi import FastAPI, Request, Response

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(service.batcher.run())
        yield
        task.cancel()
        service.batcher.close()

    app = FastAPI(title=f"dlmine serve: {service.cfg.name}", version=__version__,
                  lifespan=lifespan, description=(
                      f"The run {service.predictor.run.path.name}. Requests that arrive within "
                      f"{WINDOW_S * 1000:g} ms are stacked into one model call of at most "
                      f"{MAX_BATCH} samples. Errors: {{\"detail\": message}} with 422 (bad "
                      "input), 413 (a body over the limit), 404 (not this kind of run)."))

    @app.get("/health")
    async def health() -> dict:
        """The server is up and its model loaded: its process and the batches it ran."""
        return {"status": "ok", "pid": os.getpid(), "batches": service.batcher.calls,
                "samples": service.batcher.samples}

    @app.get("/metadata")
    async def metadata() -> dict:
        """The run's name, task, classes and the input a client sends."""
        return service.metadata()

    def route(path: str, handler):
        async def endpoint(request: Request) -> Response:
            status, payload = await answer(request, handler, max_body)
            return Response(json.dumps(payload), status, media_type="application/json")

        extra = {"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "object"}, "example": EXAMPLES[path]}}}}
        app.post(path, summary=SUMMARIES[path], openapi_extra=extra)(endpoint)

    route("/predict", service.predict)
    route("/recommend", service.recommend)
    route("/similar", service.similar)
    return app


async def answer(request, handler, max_body: int) -> tuple[int, dict]:
    """(status, JSON payload) of one POST: the handler's result, or the error as a message."""
    try:
        return 200, await handler(await read_limited(request, max_body))
    except TooLarge as exc:
        return 413, {"detail": str(exc)}
    except NotHere as exc:
        return 404, {"detail": str(exc)}
    except DlmineError as exc:
        return 422, {"detail": str(exc)}
    except Exception as exc:  # a bug in dlmine: said so, and the server goes on
        traceback.print_exc()
        return 500, {"detail": f"internal error in dlmine: {type(exc).__name__}: {exc}"}


async def read_limited(request, limit: int) -> bytes:
    """The body, refused (`TooLarge`) as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {int(declared)} bytes; the limit is {limit} bytes "
                       "(dlmine serve --max-body-mib)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over {limit} bytes, the limit (dlmine serve "
                           "--max-body-mib)")
        chunks.append(chunk)
    return b"".join(chunks)


def app_from_env():
    """The app of one uvicorn worker process (`--workers N`), from `$DLMINE_SERVE`."""
    settings = json.loads(os.environ[ENV])
    import_keras()  # without the backend's start-up lines, as in the parent process
    return create_app(Service(Path(settings["run_dir"]), settings["checkpoint"]),
                      settings["max_body"])


def serve(run_dir: Path, host: str, port: int, workers: int, checkpoint: str,
          max_body: int) -> str:
    """Serve a run until SIGTERM or Ctrl-C, then finish the requests in flight.

    With `workers` > 1, uvicorn starts that many processes, each loading the model; this
    process only checks the run first and supervises them.

    Returns:
        What stopped the server: 'SIGTERM', 'SIGINT', 'a signal' (the supervisor of workers,
        which handles the signals itself), or '' when nothing did.
    """
    import uvicorn

    options = {"host": host, "port": port, "access_log": False, "log_level": "info",
               "timeout_graceful_shutdown": None}
    check_address(host, port)  # before the model loads: a busy port is said at once
    if workers == 1:
        app = create_app(Service(run_dir, checkpoint), max_body)
    else:
        Service.check_run(run_dir, checkpoint)
        os.environ[ENV] = json.dumps({"run_dir": str(Path(run_dir).resolve()),
                                      "checkpoint": checkpoint, "max_body": max_body})
        app = f"{__name__}:app_from_env"
    with recorded_signals() as stopped:
        uvicorn.run(app, factory=workers > 1, workers=workers, **options)
    sys.stderr.flush()
    if workers > 1:
        return "a signal"  # the supervisor returns only once a signal stopped its workers
    return signal.Signals(stopped[0]).name if stopped else ""


def check_address(host: str, port: int) -> None:
    """Bind `host:port` once and let it go, so that a busy port or a host that does not
    resolve is one clear error rather than uvicorn's log line and exit status 3.

    Raises:
        DlmineError: the address cannot be served on.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DlmineError(f"--host {host}: cannot be resolved ({exc.strerror}); give an "
                          "address of this machine, such as 127.0.0.1 or 0.0.0.0") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            busy = exc.errno == errno.EADDRINUSE
            raise DlmineError(f"cannot serve on {host}:{port}: "
                              + ("the port is already in use (another server?); choose "
                                 "another --port" if busy else f"{exc.strerror}")) from None


@contextlib.contextmanager
def recorded_signals():
    """SIGTERM and SIGINT only noted in the list yielded: uvicorn raises the signal that
    stopped it again after its graceful shutdown, which must not kill the process then."""
    stopped: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, frame: stopped.append(number))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
