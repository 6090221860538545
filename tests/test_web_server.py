"""aiomp behind a web server: ``aiomp.asgi.CancelOnDisconnect``, and examples/web_server.py
driven over real HTTP.

The middleware's own tests play the ASGI server with fake ``receive``/``send`` callables
and run on asyncio, uvloop and trio. The example's tests start it in a subprocess, as a
user would (``python examples/web_server.py --port 0``), and talk to it with httpx. They
wait on what the server reports (its log lines, ``/stats``), each wait with a deadline
generous enough for a loaded 2-core machine, and never assert on how long anything took.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import psutil
import pytest

from aiomp.asgi import CancelOnDisconnect

from ._web import ROOT, Server

Message = dict[str, Any]

# -- the middleware alone: a fake server ----------------------------------------------------


class FakeServer:
    """One request's ``receive`` and ``send``, as uvicorn serves them.

    ``receive`` hands out the request's body messages, then waits: it returns
    ``http.disconnect`` once the client leaves (``leave()``) or the response is complete.
    """

    def __init__(self, *chunks: bytes, error: Exception | None = None, held: bool = False) -> None:
        self.script: collections.deque[Message] = collections.deque(
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)
        )
        self.error = error
        self.calls = 0
        self.sent: list[Message] = []
        self.gone = anyio.Event()
        self.body_arrived = anyio.Event()  # with held=True, the body waits for it
        if not held:
            self.body_arrived.set()

    def leave(self) -> None:
        self.gone.set()

    async def receive(self) -> Message:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        if self.error is not None:
            raise self.error
        if self.script:
            await self.body_arrived.wait()
            return self.script.popleft()
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.gone.set()  # as uvicorn: after the response, receive() says disconnect


SCOPE: Message = {"type": "http", "method": "POST", "path": "/work", "headers": []}


async def respond(send: Callable[[Message], Awaitable[None]], body: bytes = b"done") -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Callable[[], Awaitable[Message]]) -> list[bytes]:
    chunks = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        chunks.append(message["body"])
        if not message["more_body"]:
            return chunks


@pytest.mark.anyio
async def test_a_client_that_leaves_cancels_the_app(caplog: pytest.LogCaptureFixture) -> None:
    """The app read its body and awaits its work; the client leaves: the app is cancelled,
    the middleware returns without a response, and says so on the ``aiomp.asgi`` logger."""
    server = FakeServer(b"ab", b"cd")
    waiting = anyio.Event()
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["body"] = await read_body(receive)
        try:
            waiting.set()
            await anyio.sleep_forever()  # e.g. await pool.apply(...)
        except anyio.get_cancelled_exc_class():
            seen["cancelled"] = True
            raise

    caplog.set_level(logging.INFO, logger="aiomp.asgi")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(CancelOnDisconnect(app), SCOPE, server.receive, server.send)
            await waiting.wait()
            server.leave()
    assert seen == {"body": [b"ab", b"cd"], "cancelled": True}
    assert server.sent == []
    assert [r.getMessage() for r in caplog.records if r.name == "aiomp.asgi"] == [
        "client disconnected: cancelled POST /work"
    ]


@pytest.mark.anyio
async def test_an_app_that_never_reads_its_body_is_cancelled_too() -> None:
    """A GET handler never calls receive(): the watcher takes the body message itself."""
    server = FakeServer(b"")
    waiting = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        waiting.set()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(CancelOnDisconnect(app), SCOPE, server.receive, server.send)
            await waiting.wait()
            server.leave()
    assert server.sent == []


@pytest.mark.anyio
async def test_the_body_reaches_an_app_that_reads_it_late() -> None:
    """The watcher reads ahead; the app still gets every message, in order, when it asks."""
    server = FakeServer(b"one", b"two", b"three")
    go = anyio.Event()
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await go.wait()
        seen["body"] = await read_body(receive)
        await respond(send)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(CancelOnDisconnect(app), SCOPE, server.receive, server.send)
            await anyio.wait_all_tasks_blocked()
            assert not server.script  # the watcher has read all three and waits for the disconnect
            go.set()
    assert seen["body"] == [b"one", b"two", b"three"]
    assert [m["type"] for m in server.sent] == ["http.response.start", "http.response.body"]


@pytest.mark.anyio
async def test_read_ahead_stops_at_buffer_bytes() -> None:
    """An app that does not read yet holds back the watcher after ``buffer_bytes`` of body."""
    server = FakeServer(*[b"1234"] * 5)
    go = anyio.Event()
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await go.wait()
        seen["body"] = await read_body(receive)
        await respond(send)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(CancelOnDisconnect(app, buffer_bytes=10), SCOPE, server.receive, server.send)
            await anyio.wait_all_tasks_blocked()
            assert server.calls == 3  # 12 bytes read ahead >= 10: the watcher waits for the app
            go.set()
    assert seen["body"] == [b"1234"] * 5


@pytest.mark.anyio
async def test_a_cancelled_receive_takes_nothing() -> None:
    """Starlette's ``request.is_disconnected()`` calls receive() in a cancelled scope: with
    nothing to hand out yet, it is cancelled and takes no message from the queue."""
    server = FakeServer(b"x", b"y", held=True)
    seen: dict[str, Any] = {"cancelled": 0}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for _ in range(5):
            with anyio.CancelScope() as pending:
                pending.cancel()
                await receive()
            seen["cancelled"] += pending.cancelled_caught
        server.body_arrived.set()
        seen["body"] = await read_body(receive)
        await respond(send)

    with anyio.fail_after(10):
        await CancelOnDisconnect(app)(SCOPE, server.receive, server.send)
    assert seen == {"cancelled": 5, "body": [b"x", b"y"]}


@pytest.mark.anyio
async def test_work_after_the_response_is_not_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    """Once the response is complete the server reports a disconnect; background work
    (Starlette's ``BackgroundTask``) that the app does after its response goes on."""
    server = FakeServer(b"")
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await respond(send)
        await anyio.wait_all_tasks_blocked()  # the watcher has had every chance to see the disconnect
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        seen["background"] = "done"
        # What the watcher had read, then the server's own answer once the watch is over.
        seen["after"] = [(await receive())["type"], (await receive())["type"]]

    caplog.set_level(logging.INFO, logger="aiomp.asgi")
    with anyio.fail_after(10):
        await CancelOnDisconnect(app)(SCOPE, server.receive, server.send)
    assert seen == {"background": "done", "after": ["http.request", "http.disconnect"]}
    assert not [r for r in caplog.records if r.name == "aiomp.asgi"]


@pytest.mark.anyio
async def test_a_streamed_response_is_cancelled_when_the_client_leaves() -> None:
    server = FakeServer(b"")
    parts = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal parts
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            parts += 1
            if parts == 3:
                server.leave()
            await anyio.sleep(0.01)

    with anyio.fail_after(10):
        await CancelOnDisconnect(app)(SCOPE, server.receive, server.send)
    assert parts >= 3
    assert server.sent[-1]["more_body"] is True


@pytest.mark.anyio
async def test_the_apps_exception_keeps_its_type() -> None:
    server = FakeServer(b"")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise LookupError("no such thing")

    with anyio.fail_after(10), pytest.raises(LookupError, match="no such thing"):
        await CancelOnDisconnect(app)(SCOPE, server.receive, server.send)


@pytest.mark.anyio
async def test_an_error_from_the_servers_receive_reaches_the_app() -> None:
    server = FakeServer(b"", error=ConnectionResetError("reset by peer"))
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await receive()
        except ConnectionResetError as exc:
            seen["error"] = str(exc)
        await respond(send)

    with anyio.fail_after(10):
        await CancelOnDisconnect(app)(SCOPE, server.receive, server.send)
    assert seen == {"error": "reset by peer"}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
async def test_other_scopes_pass_through(kind: str) -> None:
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.extend([scope, receive, send])

    async def receive() -> Message:
        raise AssertionError("not called")

    async def send(message: Message) -> None:
        raise AssertionError("not called")

    scope = {"type": kind}
    await CancelOnDisconnect(app)(scope, receive, send)
    assert got == [scope, receive, send]


def test_bad_arguments() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(TypeError, match="app must be an ASGI application"):
        CancelOnDisconnect("app")  # type: ignore[arg-type]
    for bad in ("1", 1.5, True, None):
        with pytest.raises(TypeError, match="buffer_bytes must be an int"):
            CancelOnDisconnect(app, buffer_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffer_bytes must be at least 1, not 0"):
        CancelOnDisconnect(app, buffer_bytes=0)
    assert repr(CancelOnDisconnect(app, buffer_bytes=5)).endswith("buffer_bytes=5)")


# -- examples/web_server.py over real HTTP ---------------------------------------------------

WAIT = 20.0  # seconds: the deadline of every wait on the server


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One server with a pool of 2 for the tests that leave it serving."""
    running = Server("--processes", "2")
    try:
        yield running
    finally:
        running.stop(signal.SIGTERM)


async def wait_for_stats(client: Any, ok: Callable[[dict[str, int]], bool]) -> dict[str, int]:
    """Poll ``/stats`` (the pool's statistics) until ``ok`` holds, up to ``WAIT`` seconds."""
    stats: dict[str, int] = {}
    with contextlib.suppress(TimeoutError), anyio.fail_after(WAIT):
        while not ok(stats := (await client.get("/stats")).json()):
            await anyio.sleep(0.05)
        return stats
    raise AssertionError(f"the pool's statistics never got there: {stats}")


def test_health_answers_while_the_pool_is_full(server: Server) -> None:
    """8 CPU requests in the pool (2 running; the rest queued, or handed to a worker that
    is busy): /health still answers, before any of them completes; then their clients
    leave and the pool drops them all."""

    async def main() -> None:
        answered: list[int] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
            async with anyio.create_task_group() as tg:

                async def cpu() -> None:
                    async with httpx.AsyncClient(base_url=server.url, timeout=120) as own:
                        answered.append((await own.get("/spin", params={"seconds": 60})).status_code)

                for _ in range(8):
                    tg.start_soon(cpu)
                await wait_for_stats(client, lambda s: s.get("tasks_running", 0) + s.get("tasks_queued", 0) == 8)
                for _ in range(20):
                    assert (await client.get("/health")).json() == {"status": "ok"}
                stats = (await client.get("/stats")).json()
                assert (stats["tasks_running"] + stats["tasks_queued"], answered) == (8, [])
                tg.cancel_scope.cancel()  # the 8 clients hang up
            await wait_for_stats(client, lambda s: s.get("tasks_running") == 0 and s.get("tasks_queued") == 0)
        assert answered == []

    anyio.run(main)


def test_a_crashing_request_gets_a_500_and_the_server_goes_on(server: Server) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
            crashed = await client.get("/crash")
            assert crashed.status_code == 500
            assert crashed.json()["error"] == "WorkerDiedError"
            assert "exited with code 3" in crashed.json()["detail"]
            after = await client.get("/fib", params={"n": 20})
            assert (after.status_code, after.json()) == (200, {"n": 20, "fib": 6765})
            await wait_for_stats(client, lambda s: s.get("workers_alive") == 2)

    anyio.run(main)


def test_a_request_body_reaches_the_handler_whole(server: Server) -> None:
    """A body of many chunks, more than CancelOnDisconnect reads ahead (64 KiB), arrives whole."""
    text = " ".join(f"word{i}" for i in range(100_000))  # about 690 KB

    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
            answer = await client.post("/wordcount", content=text.encode())
            assert (answer.status_code, answer.json()) == (200, {"words": 100_000})

    anyio.run(main)


def test_a_request_out_of_time_gets_a_504(server: Server) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
            late = await client.get("/spin", params={"seconds": 60, "timeout": 0.5})
            assert (late.status_code, late.json()["error"]) == (504, "TimeoutError")
            assert (await client.get("/fib", params={"n": 10})).json() == {"n": 10, "fib": 55}

    anyio.run(main)


def test_a_client_that_leaves_frees_its_worker(server: Server) -> None:
    """Two 60 s requests take both workers; their clients hang up; the processes that ran
    them are stopped, and the next request is served long before 60 s."""

    async def main() -> None:
        since = len(server.lines)
        async with anyio.create_task_group() as tg:
            for _ in range(2):

                async def abandoned() -> None:
                    async with httpx.AsyncClient(base_url=server.url, timeout=120) as own:
                        await own.get("/spin", params={"seconds": 60})

                tg.start_soon(abandoned)
            started = await anyio.to_thread.run_sync(
                lambda: server.wait_for(r"spinning for 60\.0 s in pid (\d+)", WAIT, count=2, since=since)
            )
            pids = {int(m.group(1)) for m in started}
            assert len(pids) == 2
            tg.cancel_scope.cancel()  # both clients hang up
        processes = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                processes.append(psutil.Process(pid))
        _, alive = await anyio.to_thread.run_sync(lambda: psutil.wait_procs(processes, timeout=WAIT))
        assert not alive, "the abandoned requests' workers still run"
        await anyio.to_thread.run_sync(
            lambda: server.wait_for(
                r"aiomp\.asgi: client disconnected: cancelled GET /spin", WAIT, count=2, since=since
            )
        )
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
            assert (await client.get("/fib", params={"n": 15})).json() == {"n": 15, "fib": 610}

    anyio.run(main)


def test_worker_records_come_out_through_the_servers_handler(server: Server) -> None:
    """A worker's record on the app's logger, formatted by the server's configuration:
    the worker's process name, and the request id the middleware set (the worker's
    record is handled in the context of the request's call)."""

    async def main() -> None:
        since = len(server.lines)
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client:
            answer = await client.get("/fib", params={"n": 21}, headers={"x-request-id": "req-logs-1"})
        assert answer.headers["x-request-id"] == "req-logs-1"
        await anyio.to_thread.run_sync(
            lambda: server.wait_for(
                r"INFO +aiomp-worker-\d+ +\[req-logs-1\] web_server: fib\(21\) took [\d.]+ ms$", WAIT, since=since
            )
        )
        await anyio.to_thread.run_sync(
            lambda: server.wait_for(
                r'INFO +MainProcess +\[req-logs-1\] uvicorn\.access: .*"GET /fib\?n=21 HTTP/1\.1" 200$',
                WAIT,
                since=since,
            )
        )

    anyio.run(main)


def test_concurrent_requests_tag_their_workers_records(server: Server) -> None:
    """Two requests at once, each with its own id: each worker record carries its request's."""

    async def main() -> None:
        since = len(server.lines)
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as client, anyio.create_task_group() as tg:
            for n, request_id in ((22, "req-a"), (23, "req-b")):
                tg.start_soon(
                    lambda n=n, r=request_id: client.get("/fib", params={"n": n}, headers={"x-request-id": r})
                )
        for n, request_id in ((22, "req-a"), (23, "req-b")):
            pattern = rf"INFO +aiomp-worker-\d+ +\[{request_id}\] web_server: fib\({n}\) took [\d.]+ ms$"
            await anyio.to_thread.run_sync(lambda p=pattern: server.wait_for(p, WAIT, since=since))

    anyio.run(main)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_shutdown_by_signal_leaves_no_process(sig: signal.Signals) -> None:
    """With a request running in a worker, SIGTERM or SIGINT (Ctrl-C) ends the server:
    uvicorn cancels the request after its graceful timeout, the lifespan closes the pool,
    and every process of the tree (forkserver, workers, resource tracker) is gone."""
    running = Server("--processes", "2", "--graceful-timeout", "1")
    try:

        async def main() -> list[psutil.Process]:
            async with anyio.create_task_group() as tg:

                async def in_flight() -> None:
                    async with httpx.AsyncClient(base_url=running.url, timeout=120) as own:
                        with contextlib.suppress(httpx.HTTPError):  # the server hangs up on it
                            await own.get("/spin", params={"seconds": 60})

                tg.start_soon(in_flight)
                await anyio.to_thread.run_sync(lambda: running.wait_for(r"spinning for 60\.0 s", WAIT))
                tree = running.tree()
                assert len(tree) >= 4, tree  # the server, its forkserver, 2 workers
                code = await anyio.to_thread.run_sync(running.stop, sig)
                tg.cancel_scope.cancel()
            assert code in ((0, -signal.SIGTERM) if sig == signal.SIGTERM else (0,)), code
            return tree

        tree = anyio.run(main)
        _, alive = psutil.wait_procs(tree, timeout=WAIT)
        assert not alive, f"left running: {alive}"
        log = running.log()
        assert "the pool is closed and its workers have exited" in log
        assert "Application shutdown complete." in log
        # The only traceback is uvicorn's report of the request it cancelled at the end of
        # its graceful timeout (it logs every cancelled request so).
        assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in log
        assert log.count("Traceback") == log.count("CancelledError: Task cancelled, timeout graceful shutdown") <= 1, (
            log
        )
    finally:
        running.kill()


def test_the_docs_starlette_app_serves(tmp_path: Any) -> None:
    """docs/serving.md's Starlette app, copied into a module and run with ``uvicorn module:app``."""
    text = (ROOT / "docs" / "serving.md").read_text()
    block = re.search(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert block is not None and "Starlette(" in block.group(1)
    (tmp_path / "serving_app.py").write_text(block.group(1))
    command = [sys.executable, "-m", "uvicorn", "serving_app:app", "--port", "0", "--app-dir", str(tmp_path)]
    running = Server(command=command)
    try:

        async def main() -> None:
            async with httpx.AsyncClient(base_url=running.url, timeout=WAIT) as client:
                assert (await client.get("/fib", params={"n": 20})).json() == {"n": 20, "fib": 6765}

        anyio.run(main)
        assert running.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    finally:
        running.kill()
