"""Stop a request's work when its client goes away: an ASGI middleware, no web framework needed.

Starlette, FastAPI and uvicorn do not cancel a request handler when its client
disconnects. A handler awaiting ``pool.apply(...)`` keeps its worker busy until the
task ends, for a client that is gone. Wrap the app::

    from aiomp.asgi import CancelOnDisconnect

    app = CancelOnDisconnect(Starlette(routes=..., lifespan=...))
    # or: Starlette(..., middleware=[Middleware(CancelOnDisconnect)])
    # or: app.add_middleware(CancelOnDisconnect)  (FastAPI)

and a request whose client disconnects before its response is complete is cancelled:
the handler's ``await pool.apply(...)`` raises the event loop's cancellation, so the
pool stops the running task (its worker is replaced) and drops what was still queued.
The server gets no response for a client that has left, and none is needed.

How it works. The middleware is the only caller of the server's ``receive``: a
watcher task reads every message and queues it, and the app reads that queue through
a ``receive`` of its own. The request body is never lost: each ``http.request``
message reaches the app in order, whenever it asks. The watcher reads ahead at most
``buffer_bytes`` of body that the app has not read yet; past that it waits for the app
(so a disconnect during a big upload that the app does not read is noticed once the
app reads on). Once the body is complete, the server's next message is
``http.disconnect``, which is what the watcher waits for. The watch ends when the
response is complete (a final ``http.response.body``), so that work the app does after
its response, such as Starlette's background tasks, is not cancelled.

Only ``http`` scopes are watched; ``websocket`` and ``lifespan`` pass through. The
cancellation is anyio's, so this works on asyncio, uvloop and trio. Each cancelled
request is logged at INFO on the ``aiomp.asgi`` logger.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

__all__ = ["CancelOnDisconnect"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger(__name__)


class CancelOnDisconnect:
    """ASGI middleware: cancel a request's handling when its client disconnects.

    ``app`` is any ASGI 3 application. ``buffer_bytes`` bounds the request body that
    is read ahead of the app (default 64 KiB); see the module's docstring.
    """

    def __init__(self, app: ASGIApp, *, buffer_bytes: int = 64 * 1024) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application (a callable), not {type(app).__name__}")
        if isinstance(buffer_bytes, bool) or not isinstance(buffer_bytes, int):
            raise TypeError(f"buffer_bytes must be an int, not {type(buffer_bytes).__name__}")
        if buffer_bytes < 1:
            raise ValueError(f"buffer_bytes must be at least 1, not {buffer_bytes}")
        self.app = app
        self.buffer_bytes = buffer_bytes

    def __repr__(self) -> str:
        return f"CancelOnDisconnect({self.app!r}, buffer_bytes={self.buffer_bytes})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``app`` for one ASGI connection; an ``http`` one is cancelled if its client leaves."""
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        if not callable(receive) or not callable(send):
            raise TypeError("receive and send must be the server's ASGI callables")
        await _Watch(receive, send, self.buffer_bytes).run(self.app, scope)


class _Watch:
    """One request: the watcher task, the app's queue of messages, and the response's state.

    Invariant: while ``watching`` is true, only the watcher calls the server's
    ``receive``; the app's ``receive`` takes from ``messages``. Once it is false, the
    app's ``receive`` hands out what is left in ``messages``, then calls the server's.
    """

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self.server_receive = receive
        self.server_send = send
        self.limit = limit
        self.messages: collections.deque[Message] = collections.deque()
        self.unread = 0  # bytes of body in ``messages``
        self.changed = anyio.Event()
        self.watching = True
        self.error: Exception | None = None  # what the server's receive raised, for the app
        self.response_complete = False
        self.app_scope = anyio.CancelScope()
        self.watch_scope = anyio.CancelScope()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch, scope)
            with self.app_scope:
                try:
                    await app(scope, self.receive, self.send)
                except Exception as exc:  # raised below, outside the task group: no ExceptionGroup
                    error = exc
            self.watch_scope.cancel()
        if error is not None:
            try:
                raise error
            finally:
                error = None

    async def _watch(self, scope: Scope) -> None:
        with self.watch_scope:
            try:
                while True:
                    while self.unread >= self.limit:  # the app has enough to read: wait for it
                        await self.changed.wait()
                    message = await self.server_receive()
                    self.messages.append(message)
                    self.unread += _body_size(message)
                    if message.get("type") == "http.disconnect":
                        if not self.response_complete:
                            _log.info("client disconnected: cancelled %s %s", scope.get("method"), scope.get("path"))
                            self.app_scope.cancel()
                        return
                    self._notify()
            except Exception as exc:
                self.error = exc
            finally:
                self.watching = False
                self._notify()

    async def receive(self) -> Message:
        """The app's ``receive``: the watcher's messages in order, then the server's."""
        while not self.messages:
            if self.error is not None:
                raise self.error
            if not self.watching:
                return await self.server_receive()
            await self.changed.wait()  # cancel-safe: nothing is taken before the wait ends
        message = self.messages.popleft()
        self.unread -= _body_size(message)
        self._notify()
        return message

    async def send(self, message: Message) -> None:
        """The app's ``send``: the server's, noting when the response is complete."""
        kind = message.get("type")
        if (kind == "http.response.body" and not message.get("more_body", False)) or kind == "http.response.pathsend":
            self.response_complete = True  # before the send: the server may then report a disconnect
        await self.server_send(message)
        if self.response_complete:
            self.watch_scope.cancel()


def _body_size(message: Message) -> int:
    body = message.get("body") if message.get("type") == "http.request" else None
    return len(body) if body else 0
