"""A Starlette app under uvicorn that runs its CPU-bound requests in an aiomp.Pool.

Run it with ``python examples/web_server.py`` (``--port 8000``, ``--processes N``;
``pip install starlette uvicorn``, and uvloop to have uvicorn use it), then try::

    curl 'localhost:8000/fib?n=27'             # computed in a worker process
    curl localhost:8000/health                 # answers at once, however busy the workers are
    curl 'localhost:8000/spin?seconds=30&timeout=1'   # 504: the worker is stopped after 1 s
    curl --data-binary @README.md localhost:8000/wordcount   # a request body, to a worker
    curl localhost:8000/crash                  # 500 WorkerDiedError; the server goes on
    curl localhost:8000/stats                  # Pool.statistics()

What it shows (docs/serving.md explains each):

* one ``aiomp.Pool`` for the whole server, started and closed by the app's lifespan;
* a timeout per request (``pool.apply(..., timeout=...)``) answered with a 504;
* a worker that dies mid-request answered with a 500, while the pool replaces it;
* ``aiomp.asgi.CancelOnDisconnect``: a request whose client goes away is cancelled, and
  so is its pool call: the running task is stopped and its worker freed;
* logging configured for the app's loggers too (uvicorn configures only its own), so
  that the workers' records come out through the server's handler with their process
  name, and a request id on every record, set per request by a middleware.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import aiomp
from aiomp.asgi import CancelOnDisconnect

log = logging.getLogger("web_server")

# -- code that runs in the workers: plain functions, plain logging ------------------


def fib(n: int) -> int:
    """Deliberately slow: fib(27) is some 50 ms of pure-Python CPU."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def compute_fib(n: int) -> int:
    started = time.perf_counter()
    value = fib(n)
    log.info("fib(%d) took %.1f ms", n, (time.perf_counter() - started) * 1000)
    return value


def spin(seconds: float) -> float:
    """Burn CPU for ``seconds``: long enough to try timeouts and disconnects on."""
    log.info("spinning for %.1f s in pid %d", seconds, os.getpid())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(10_000))
    return seconds


def count_words(text: str) -> int:
    return len(text.split())


def crash() -> None:
    log.warning("exiting with os._exit(3) in the middle of a task")
    os._exit(3)


# -- request ids: a contextvar set per request, a filter that puts it on records ---

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Put the current request's id on every record as ``record.request_id``.

    It sits on the handler, so it sees every record the handler prints: the app's,
    uvicorn's access log (written inside the request) and the workers' (aiomp
    handles a task's records in the context of the call that submitted the task).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class RequestIdMiddleware:
    """Pure ASGI middleware: take ``x-request-id`` from the request or make one, echo it back."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given[:64] or uuid.uuid4().hex[:12]

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": RequestIdFilter}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)-7s %(processName)-14s [%(request_id)s] %(name)s: %(message)s"}
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
            "filters": ["request_id"],
        }
    },
    # uvicorn's loggers keep their levels; the root logger catches the app's ("web_server",
    # in the server and in the workers) and aiomp's ("aiomp.asgi" says which requests were
    # cancelled because their client left).
    "loggers": {
        "uvicorn": {"level": "INFO"},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"level": "INFO"},
    },
    "root": {"level": "INFO", "handlers": ["stderr"]},
}


# -- the app ------------------------------------------------------------------------

MAX_TIMEOUT = 60.0  # seconds: the most a request may ask for with ?timeout=


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncGenerator[dict[str, Any], None]:
    """One pool for the server's life: started before the first request, closed after the last."""
    # A worker that has grown past 500 MiB (caches, fragmentation) is replaced after its task.
    async with aiomp.Pool(app.state.processes, max_memory_per_child=500 * 2**20) as pool:
        log.info("a pool of %d worker processes is ready", pool.processes)
        yield {"pool": pool}  # each request sees it as request.state.pool
    log.info("the pool is closed and its workers have exited")


def _timeout(request: Request, default: float) -> float:
    return min(float(request.query_params.get("timeout", default)), MAX_TIMEOUT)


async def fib_endpoint(request: Request) -> JSONResponse:
    n = int(request.query_params.get("n", "27"))
    if not 0 <= n <= 40:
        return JSONResponse({"error": "n must be between 0 and 40"}, status_code=400)
    value = await request.state.pool.apply(compute_fib, (n,), timeout=_timeout(request, 10.0))
    return JSONResponse({"n": n, "fib": value})


async def spin_endpoint(request: Request) -> JSONResponse:
    seconds = min(float(request.query_params.get("seconds", "1")), MAX_TIMEOUT)
    await request.state.pool.apply(spin, (seconds,), timeout=_timeout(request, MAX_TIMEOUT))
    return JSONResponse({"spun": seconds})


async def wordcount_endpoint(request: Request) -> JSONResponse:
    text = (await request.body()).decode()  # the body reaches the handler through CancelOnDisconnect intact
    words = await request.state.pool.apply(count_words, (text,), timeout=_timeout(request, 10.0))
    return JSONResponse({"words": words})


async def crash_endpoint(request: Request) -> JSONResponse:
    await request.state.pool.apply(crash)
    return JSONResponse({"crashed": False})  # not reached: the worker exits


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(dataclasses.asdict(request.state.pool.statistics()))


async def timed_out(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": "TimeoutError", "detail": "the work took too long and was stopped"}, 504)


async def worker_died(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s: %s", type(exc).__name__, exc)
    return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, 500)


def create_app(processes: int | None = None) -> Starlette:
    app = Starlette(
        routes=[
            Route("/fib", fib_endpoint),
            Route("/spin", spin_endpoint),
            Route("/wordcount", wordcount_endpoint, methods=["POST"]),
            Route("/crash", crash_endpoint),
            Route("/health", health),
            Route("/stats", stats),
        ],
        # Outermost first: the request id is set before CancelOnDisconnect starts its
        # watcher, so that its log line about a cancelled request carries the id too.
        middleware=[Middleware(RequestIdMiddleware), Middleware(CancelOnDisconnect)],
        exception_handlers={TimeoutError: timed_out, aiomp.WorkerDiedError: worker_died},
        lifespan=lifespan,
    )
    app.state.processes = processes
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (the log says which)")
    parser.add_argument("--processes", type=int, default=None, help="pool size (default: one per usable CPU)")
    parser.add_argument(
        "--graceful-timeout", type=float, default=10.0, help="on shutdown, seconds to let requests finish"
    )
    options = parser.parse_args()
    uvicorn.run(
        create_app(options.processes),
        host=options.host,
        port=options.port,
        log_config=LOGGING,  # uvicorn applies it with logging.config.dictConfig before the lifespan starts
        timeout_graceful_shutdown=options.graceful_timeout,
    )  # loop="auto": uvloop when it is installed


if __name__ == "__main__":  # needed: the workers import this module
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after its clean shutdown
        main()
