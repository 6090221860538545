"""aiomp.Pipe and aiomp.Connection: blocking in any process, awaitable in the parent."""

from __future__ import annotations

import hashlib
import math
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

import aiomp

from . import _prims
from .conftest import BACKENDS

pytestmark = pytest.mark.anyio

ASYNCIO_BACKENDS = [param for param in BACKENDS if param.id != "trio"]


MiB = 1024 * 1024
# The longest the event loop may stall while 64 MiB move. A 1 ms ticker measures it. The
# bound is generous, for a loaded machine: it is there to catch a blocking call, which
# would stall the loop for seconds (the peer waits for the loop's ticks before it reads or
# writes, up to a time-out of 5 s), not to time the scheduler.
STALL_LIMIT = 0.5
PEER_TIMEOUT = 5


@pytest.fixture
def pipe() -> Iterator[Callable[..., tuple[Any, Any]]]:
    """Make pipes whose ends are closed after the test."""
    made: list[Any] = []

    def factory(duplex: bool = True) -> tuple[Any, Any]:
        a, b = aiomp.Pipe(duplex)
        made.extend((a, b))
        return a, b

    yield factory
    for conn in made:
        conn.close()


# -- the blocking API --------------------------------------------------------------------------


def test_blocking_api(pipe: Callable[..., tuple[Any, Any]]) -> None:
    a, b = pipe()
    assert isinstance(a, aiomp.Connection) and isinstance(b, aiomp.Connection)
    assert isinstance(a.fileno(), int)
    assert not a.closed
    assert not b.poll(0)
    a.send([42, None, "hello"])
    assert b.poll(5)
    assert b.recv() == [42, None, "hello"]
    b.send_bytes(b"abcdef")
    assert a.recv_bytes() == b"abcdef"
    b.send_bytes(b"abcdef", 2, 3)
    assert a.recv_bytes() == b"cde"
    buf = bytearray(10)
    b.send_bytes(b"xyz")
    assert a.recv_bytes_into(buf, 2) == 3
    assert buf[2:5] == b"xyz"
    a.close()
    assert a.closed
    with pytest.raises(OSError):
        a.send(1)
    with pytest.raises(EOFError):
        b.recv()


def test_one_way_pipe(pipe: Callable[..., tuple[Any, Any]]) -> None:
    r, w = pipe(False)
    w.send("one way")
    assert r.recv() == "one way"
    with pytest.raises(OSError):
        r.send("back")
    with pytest.raises(OSError):
        w.recv()


# -- the awaitable API -------------------------------------------------------------------------


async def test_asend_arecv_both_ways(pipe: Callable[..., tuple[Any, Any]]) -> None:
    a, b = pipe()
    with anyio.fail_after(10):
        await a.asend({"x": 1})
        assert await b.arecv() == {"x": 1}
        await b.asend([1, 2, 3])
        assert await a.arecv() == [1, 2, 3]
        await a.asend_bytes(b"raw bytes")
        assert await b.arecv_bytes() == b"raw bytes"
        await b.asend_bytes(memoryview(b"a memoryview"))
        assert await a.arecv_bytes() == b"a memoryview"
        await a.asend_bytes(bytearray(b"pickled?"))
        assert b.recv_bytes() == b"pickled?"
        for i in range(100):
            await a.asend(i)
        assert [await b.arecv() for _ in range(100)] == list(range(100))


async def test_one_way_pipe_async(pipe: Callable[..., tuple[Any, Any]]) -> None:
    r, w = pipe(False)
    with anyio.fail_after(10):
        await w.asend("one way")
        assert await r.arecv() == "one way"
        with pytest.raises(OSError):
            await r.asend("back")


async def test_mixing_blocking_and_awaitable_calls(pipe: Callable[..., tuple[Any, Any]]) -> None:
    """After an awaited recv (the loop watched the fd), blocking calls still work."""
    a, b = pipe()
    with anyio.fail_after(10):
        for i in range(4):
            a.send(i)
        assert await b.arecv() == 0
        assert b.recv() == 1
        assert await b.arecv() == 2
        assert b.recv() == 3
        await b.asend("x")
        assert a.recv() == "x"
        assert not b.poll(0.05)
        a.send_bytes(b"y")
        assert b.recv_bytes() == b"y"


async def test_child_receives_on_an_end_the_parent_awaited(pipe: Callable[..., tuple[Any, Any]]) -> None:
    """The parent awaits on an end, then hands it to a child that uses it blocking."""
    a, b = pipe()
    report_r, report_w = pipe(False)
    with anyio.fail_after(20):
        await b.asend("first")
        assert await a.arecv() == "first"
        async with aiomp.Process(target=_prims.recv_and_report_ready, args=(a, report_w)):
            kind, pid = await report_r.arecv()
            assert kind == "ready"
            await _prims.wait_until_asleep(pid)  # the child is blocked in recv() now
            await b.asend("for the child")
            assert await report_r.arecv() == ("ok", "for the child")


async def test_arecv_eof_and_async_for(pipe: Callable[..., tuple[Any, Any]]) -> None:
    parent_end, child_end = pipe()
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.send_items, args=(child_end, ["a", "b", "c"], 0.01)):
            child_end.close()  # as in the docs: the parent keeps only its own end
            got = [msg async for msg in parent_end]
        assert got == ["a", "b", "c"]
        with pytest.raises(EOFError):
            await parent_end.arecv()
        with pytest.raises(EOFError):
            await parent_end.arecv_bytes()


async def test_arecv_eof_in_process(pipe: Callable[..., tuple[Any, Any]]) -> None:
    a, b = pipe()
    with anyio.fail_after(10):
        await a.asend(1)
        await a.asend(2)
        a.close()
        assert await b.arecv() == 1
        assert [m async for m in b] == [2]
        with pytest.raises(EOFError):
            await b.arecv()


async def test_close_wakes_a_waiting_peer(pipe: Callable[..., tuple[Any, Any]]) -> None:
    a, b = pipe()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def closer() -> None:
                await anyio.sleep(0.1)
                a.close()

            tg.start_soon(closer)
            with pytest.raises(EOFError):
                await b.arecv()


async def test_echo_child(pipe: Callable[..., tuple[Any, Any]]) -> None:
    a, b = pipe()
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.echo_conn, args=(b, 50)):
            b.close()
            for i in range(50):
                await a.asend(("msg", i))
                assert await a.arecv() == ("msg", i)
            with pytest.raises(EOFError):
                await a.arecv()


# -- big messages ------------------------------------------------------------------------------


async def test_64mib_asend_does_not_block_the_loop(pipe: Callable[..., tuple[Any, Any]]) -> None:
    """The child starts reading once the loop has ticked 50 times during the send: a blocking
    send would stall the loop until the child's time-out."""
    a, b = pipe()
    data = _prims.pattern(64 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    go = aiomp.Event()
    with anyio.fail_after(40):
        async with aiomp.Process(target=_prims.recv_digest_when, args=(b, go, PEER_TIMEOUT)):
            b.close()
            _, max_gap, _, released = await _prims.while_ticking_then(lambda: a.asend_bytes(data), go.set)
            assert await a.arecv() == (len(data), digest)
    assert released, "the send finished before the child began to read"
    assert max_gap < STALL_LIMIT, f"the loop stalled for {max_gap:.3f} s"


async def test_64mib_arecv_does_not_block_the_loop(pipe: Callable[..., tuple[Any, Any]]) -> None:
    """The child sends once the loop has ticked 50 times during the receive."""
    a, b = pipe()
    expected = hashlib.sha256(_prims.pattern(64 * MiB)).hexdigest()
    go = aiomp.Event()
    with anyio.fail_after(40):
        async with aiomp.Process(target=_prims.send_bytes_when, args=(b, 64 * MiB, go, PEER_TIMEOUT)):
            b.close()
            data, max_gap, _, released = await _prims.while_ticking_then(a.arecv_bytes, go.set)
    assert released
    assert len(data) == 64 * MiB
    assert hashlib.sha256(data).hexdigest() == expected
    assert max_gap < STALL_LIMIT, f"the loop stalled for {max_gap:.3f} s"


async def test_64mib_object_round_trip(pipe: Callable[..., tuple[Any, Any]]) -> None:
    np = pytest.importorskip("numpy")
    a, b = pipe()
    arr = np.arange(8 * MiB, dtype=np.float64)  # 64 MiB
    with anyio.fail_after(40):
        async with aiomp.Process(target=_prims.echo_conn, args=(b, 1)):
            b.close()
            _, max_gap, _ = await _prims.while_ticking(a.asend, arr)
            back, max_gap2, _ = await _prims.while_ticking(a.arecv)
    assert np.array_equal(back, arr)
    assert max(max_gap, max_gap2) < STALL_LIMIT, f"the loop stalled for {max(max_gap, max_gap2):.3f} s"


async def test_big_messages_both_ways_at_once_with_a_child(pipe: Callable[..., tuple[Any, Any]]) -> None:
    """Each side sends big messages while it receives the other's: no deadlock."""
    size, count = 16 * MiB, 3
    a, b = pipe()
    received: list[str] = []

    async def sender() -> None:
        for i in range(count):
            await a.asend_bytes(_prims.pattern(size, i))

    async def receiver() -> None:
        for _ in range(count):
            received.append(hashlib.sha256(await a.arecv_bytes()).hexdigest())

    with anyio.fail_after(40):
        async with aiomp.Process(target=_prims.async_exchange, args=(b, size, count)) as p:
            b.close()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                tg.start_soon(receiver)
            child_received = await a.arecv()
    assert p.exitcode == 0
    assert child_received == [hashlib.sha256(_prims.pattern(size, i)).hexdigest() for i in range(count)]
    assert received == [hashlib.sha256(_prims.pattern(size, i + 100)).hexdigest() for i in range(count)]


async def test_big_messages_both_ways_in_one_process(pipe: Callable[..., tuple[Any, Any]]) -> None:
    a, b = pipe()
    size = 8 * MiB
    got: dict[str, bytes] = {}

    async def exchange(me: Any, name: str, payload: bytes) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(me.asend_bytes, payload)
            got[name] = await me.arecv_bytes()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(exchange, a, "a", b"A" * size)
            tg.start_soon(exchange, b, "b", b"B" * size)
    assert got["a"] == b"B" * size
    assert got["b"] == b"A" * size


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelled_arecv_loses_nothing(pipe: Callable[..., tuple[Any, Any]]) -> None:
    a, b = pipe()
    with anyio.fail_after(10):
        with anyio.move_on_after(0.1) as scope:
            await b.arecv()
        assert scope.cancelled_caught
        await a.asend("kept")
        assert await b.arecv() == "kept"
        with anyio.move_on_after(0.1) as scope:
            await b.arecv_bytes()
        assert scope.cancelled_caught
        await a.asend_bytes(b"kept too")
        assert await b.arecv_bytes() == b"kept too"
        scope = anyio.CancelScope()
        scope.cancel()
        await a.asend("still kept")
        with scope:
            await b.arecv()
        assert await b.arecv() == "still kept"


async def test_arecv_cancelled_at_random_moments_loses_nothing(pipe: Callable[..., tuple[Any, Any]]) -> None:
    n = 300
    a, b = pipe()
    rng = random.Random(3)
    got: list[int] = []
    cancelled = 0
    with anyio.fail_after(40):
        async with aiomp.Process(target=_prims.send_items, args=(b, list(range(n)), 0.0005)):
            b.close()
            while len(got) < n:
                with anyio.move_on_after(rng.choice([0, 0.0001, 0.0005, 0.001, 0.003])) as scope:
                    got.append(await a.arecv())
                cancelled += scope.cancelled_caught
    assert got == list(range(n))
    assert cancelled > 10


async def test_arecv_cancelled_in_the_middle_of_a_big_message(pipe: Callable[..., tuple[Any, Any]]) -> None:
    """Short deadlines keep cutting into a 32 MiB transfer; the message still arrives whole."""
    a, b = pipe()
    size = 32 * MiB
    expected = hashlib.sha256(_prims.pattern(size)).hexdigest()
    attempts = 0
    data = None
    with anyio.fail_after(40):
        async with aiomp.Process(target=_prims.send_bytes_after, args=(b, size, 0.2)):
            b.close()
            while data is None:
                attempts += 1
                with anyio.move_on_after(0.002):
                    data = await a.arecv_bytes()
    assert attempts > 5
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == expected


@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
@pytest.mark.parametrize("what", ["arecv", "arecv_bytes", "async_for"])
async def test_asyncio_task_cancel(pipe: Callable[..., tuple[Any, Any]], anyio_backend: Any, what: str) -> None:
    """asyncio.Task.cancel is asyncio's own: asyncio and uvloop only."""
    a, b = pipe()
    if what == "async_for":

        async def iterate() -> None:
            async for _ in b:
                pass

        coro = iterate()
    else:
        coro = getattr(b, what)()
    with anyio.fail_after(10):
        await _prims.cancel_asyncio_task(coro)
        await a.asend("after")
        assert await b.arecv() == "after"


async def test_waiting_uses_no_thread(pipe: Callable[..., tuple[Any, Any]]) -> None:
    ends = [pipe() for _ in range(3)]
    with anyio.fail_after(10):
        await ends[0][0].asend("warm up")
        assert await ends[0][1].arecv() == "warm up"
        before = threading.active_count()
        async with anyio.create_task_group() as tg:
            for _, b in ends:
                tg.start_soon(b.arecv)
            await anyio.sleep(0.15)
            during = threading.active_count()
            tg.cancel_scope.cancel()
    assert during <= before, f"{during - before} threads started to wait"


# -- bad input ---------------------------------------------------------------------------------


async def test_bad_arguments(pipe: Callable[..., tuple[Any, Any]]) -> None:
    a, _ = pipe()
    with pytest.raises(TypeError):
        await a.asend_bytes("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        a.send_bytes("not bytes")  # type: ignore[arg-type]
    a.close()
    with pytest.raises(OSError):
        await a.asend(1)
    with pytest.raises(OSError):
        await a.arecv()


# -- regressions: socket.setdefaulttimeout() and negative timeouts ------------------------------


@pytest.fixture
def default_timeout() -> Iterator[Callable[[float | None], None]]:
    """``socket.setdefaulttimeout``, put back after the test."""
    old = socket.getdefaulttimeout()
    yield socket.setdefaulttimeout
    socket.setdefaulttimeout(old)


def test_blocking_calls_ignore_the_default_socket_timeout(default_timeout: Callable[[float | None], None]) -> None:
    """bpo-6056: after socket.setdefaulttimeout(0.05), recv() and get() still block (before:
    TimeoutError), and 4 MiB go through a pipe and a queue whole (before: torn half-way).

    The peers wait 0.3 s, longer than the default timeout, before they act: that delay is
    the scenario. A loaded machine only makes it longer."""
    default_timeout(0.05)
    big = _prims.pattern(4 * MiB)
    a, b = aiomp.Pipe()
    q = aiomp.Queue()
    try:
        sender = threading.Timer(0.3, a.send, ("late",))
        sender.start()
        assert b.recv() == "late"
        sender.join(10)
        putter = threading.Timer(0.3, q.put, ("late",))
        putter.start()
        assert q.get() == "late"
        putter.join(10)
        got: list[bytes] = []
        reader = threading.Timer(0.3, lambda: got.append(b.recv_bytes()))
        reader.start()
        a.send_bytes(big)  # blocks until the reader takes it, 0.3 s on
        reader.join(10)
        assert got == [big]
        q.put(big)  # its feeder thread blocks on the full pipe for 0.3 s
        time.sleep(0.3)
        assert q.get(timeout=10) == big
    finally:
        a.close()
        b.close()
        q.close()
        q.join_thread()


async def test_awaits_ignore_the_default_socket_timeout(default_timeout: Callable[[float | None], None]) -> None:
    """Before: arecv() and aget() blocked the loop for the whole default timeout, then raised
    TimeoutError. Now they wait on the loop; the peer acts once the loop has ticked 50 times."""
    default_timeout(2.0)
    a, b = aiomp.Pipe()
    q = aiomp.Queue()
    try:
        with anyio.fail_after(20):
            got, max_gap, _, released = await _prims.while_ticking_then(b.arecv, lambda: a.send("late"))
            assert (got, released) == ("late", True)
            assert max_gap < STALL_LIMIT, f"the loop stalled for {max_gap:.3f} s"
            got, max_gap, _, released = await _prims.while_ticking_then(q.aget, lambda: q.put("late"))
            assert (got, released) == ("late", True)
            assert max_gap < STALL_LIMIT, f"the loop stalled for {max_gap:.3f} s"
            big = _prims.pattern(4 * MiB)
            async with anyio.create_task_group() as tg:
                tg.start_soon(a.asend_bytes, big)
                assert await b.arecv_bytes() == big
            await q.aput(big)
            assert await q.aget() == big
    finally:
        a.close()
        b.close()
        q.close()
        q.join_thread()


def test_poll_negative_timeout_counts_as_zero(pipe: Callable[..., tuple[Any, Any]]) -> None:
    """As the stdlib's poll: poll(deadline - now) after the deadline looks once (before: ValueError)."""
    a, b = pipe()
    assert a.poll(-1) is False
    assert a.poll(-0.001) is False
    assert a.poll(-math.inf) is False
    b.send_bytes(b"x")
    assert a.poll(5)
    assert a.poll(-1) is True
    assert a.recv_bytes() == b"x"
    with pytest.raises(ValueError, match="timeout"):
        a.poll(math.nan)
