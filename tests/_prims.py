"""Child-process targets for the tests of aiomp's primitives.

Module level, so that spawn and forkserver children can import them. Children
report through the primitive under test, through a file, or through their exit
code, and every blocking call here has a timeout so a broken primitive makes a
test fail instead of hang.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue
import sys
import time
from pathlib import Path
from typing import Any

STATE: dict[str, Any] = {}

# ---------------------------------------------------------------- processes


def noop() -> None:
    pass


def exit_with(code: int) -> None:
    sys.exit(code)


def raise_error() -> None:
    raise RuntimeError("raised in the child on purpose")


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def write(path: str, text: str) -> None:
    Path(path).write_text(text)


def write_kwargs(path: str, *, a: int = 0, b: int = 0) -> None:
    Path(path).write_text(f"{a} {b}")


def write_identity(path: str) -> None:
    """Record what the child knows about itself and its parent."""
    me = multiprocessing.current_process()
    parent = multiprocessing.parent_process()
    Path(path).write_text(repr((me.name, os.getpid(), parent.pid if parent else None, __name__)))


async def async_write_library(path: str, seconds: float = 0.0) -> None:
    """An async target: record which event loop library runs it."""
    import sniffio

    library = sniffio.current_async_library()
    import anyio

    await anyio.sleep(seconds)
    Path(path).write_text(library)


async def async_raise() -> None:
    import anyio

    await anyio.sleep(0)
    raise KeyError("async child failed on purpose")


async def async_exit_code(code: int) -> None:
    import anyio

    await anyio.sleep(0.01)
    sys.exit(code)


async def async_sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


# ---------------------------------------------------------------- tutorials


def hello(name: str) -> None:
    print("hello", name, flush=True)


def put_answer(q: Any) -> None:
    q.put([42, None, "hello"])


def send_answer(conn: Any) -> None:
    conn.send([42, None, "hello"])
    conn.close()


def locked_print(lock: Any, i: int, path: str) -> None:
    """The docs' Lock example, plus a log that shows whether two holders overlapped."""
    lock.acquire()
    try:
        with open(path, "a") as log:
            log.write(f"enter {i}\n")
            log.flush()
            print("hello world", i, flush=True)
            time.sleep(0.01)
            log.write(f"leave {i}\n")
    finally:
        lock.release()


def negate(n: Any, a: Any) -> None:
    n.value = 3.1415927
    for i in range(len(a)):
        a[i] = -a[i]


def produce(q: Any, items: list[Any], end: Any = None) -> None:
    for item in items:
        q.put(item)
    q.put(end)


def produce_then_shutdown(q: Any, n: int, pause: float = 0.0) -> None:
    for i in range(n):
        q.put(i)
        if pause:
            time.sleep(pause)
    q.shutdown()


async def aproduce_then_shutdown(q: Any, n: int) -> None:
    for i in range(n):
        await q.aput(i)
    q.shutdown()


def square_worker(tasks: Any, done: Any) -> None:
    """The docs' worker: ``for args in iter(input.get, 'STOP')``."""
    for x in iter(tasks.get, "STOP"):
        done.put((x, x * x))


async def asquare_worker(tasks: Any, done: Any) -> None:
    async for x in tasks:
        await done.aput((x, x * x))


# ---------------------------------------------------------------- queues


def consume_until_shutdown(q: Any, out: Any) -> None:
    got = []
    while True:
        try:
            got.append(q.get(timeout=20))
        except queue.Empty:
            break  # never happens when the test works: the parent sees too few items
        except Exception as error:
            if type(error).__name__ == "QueueShutDown":
                break
            raise
    out.put(got)


async def aconsume_until_shutdown(q: Any, out: Any) -> None:
    got = [item async for item in q]
    await out.aput(got)


def get_one(q: Any, out: Any) -> None:
    kwargs = {} if type(q).__name__ == "SimpleQueue" else {"timeout": 10}
    try:
        out.put(("item", q.get(**kwargs)))
    except Exception as error:
        out.put(("error", type(error).__name__))


def shutdown(q: Any) -> None:
    q.shutdown()


def put_items(q: Any, items: list[Any], pause: float = 0.0) -> None:
    for item in items:
        q.put(item)
        if pause:
            time.sleep(pause)


def put_after(q: Any, item: Any, delay: float) -> None:
    time.sleep(delay)
    q.put(item)


def get_n_and_ack(q: Any, n: int, delay: float = 0.0) -> None:
    for _ in range(n):
        q.get(timeout=10)
        time.sleep(delay)
        q.task_done()


def drain_n(q: Any, n: int, out: Any) -> None:
    out.put([q.get(timeout=10) for _ in range(n)])


# ---------------------------------------------------------------- pipes


def echo_conn(conn: Any, count: int) -> None:
    for _ in range(count):
        conn.send(conn.recv())
    conn.close()


def send_items(conn: Any, items: list[Any], pause: float = 0.0) -> None:
    for item in items:
        conn.send(item)
        if pause:
            time.sleep(pause)
    conn.close()


def send_bytes_after(conn: Any, size: int, delay: float) -> None:
    data = _pattern(size)
    time.sleep(delay)
    conn.send_bytes(data)
    conn.close()


def send_after(conn: Any, obj: Any, delay: float) -> None:
    time.sleep(delay)
    conn.send(obj)
    conn.close()


def recv_digest_when(conn: Any, go: Any, timeout: float) -> None:
    """Start reading only once ``go`` is set (or after ``timeout``), then answer with the
    message's digest."""
    go.wait(timeout)
    data = conn.recv_bytes()
    conn.send((len(data), hashlib.sha256(data).hexdigest()))
    conn.close()


def send_bytes_when(conn: Any, size: int, go: Any, timeout: float) -> None:
    """Send ``size`` bytes once ``go`` is set (or after ``timeout``)."""
    data = _pattern(size)
    go.wait(timeout)
    conn.send_bytes(data)
    conn.close()


def recv_and_report_ready(conn: Any, out: Any) -> None:
    """``recv_and_report``, saying first that the next thing it does is block in ``recv``."""
    out.send(("ready", os.getpid()))
    recv_and_report(conn, out)


def recv_digest_after(conn: Any, delay: float) -> None:
    """Start reading only after ``delay``, then answer with the message's digest."""
    time.sleep(delay)
    data = conn.recv_bytes()
    conn.send((len(data), hashlib.sha256(data).hexdigest()))
    conn.close()


def recv_and_report(conn: Any, out: Any) -> None:
    try:
        out.send(("ok", conn.recv()))
    except Exception as error:
        out.send(("error", f"{type(error).__name__}: {error}"))
    conn.close()
    out.close()


async def async_exchange(conn: Any, size: int, count: int) -> None:
    """Send ``count`` messages of ``size`` bytes while receiving as many, at once."""
    import anyio

    received: list[str] = []

    async def sender() -> None:
        for i in range(count):
            await conn.asend_bytes(_pattern(size, i + 100))

    async def receiver() -> None:
        for _ in range(count):
            data = await conn.arecv_bytes()
            received.append(hashlib.sha256(data).hexdigest())

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            tg.start_soon(receiver)
        await conn.asend(received)
    conn.close()


def _pattern(size: int, seed: int = 0) -> bytes:
    block = bytes((seed + i) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


def pattern(size: int, seed: int = 0) -> bytes:
    return _pattern(size, seed)


# ---------------------------------------------------------------- synchronisation


def try_acquire(lock: Any, timeout: float) -> None:
    """Exit 0 if the lock could be taken within ``timeout``, 3 if not."""
    if lock.acquire(timeout=timeout):
        lock.release()
        sys.exit(0)
    sys.exit(3)


def hold(lock: Any, ready: Any, seconds: float) -> None:
    """Take the lock, tell the parent, hold it for ``seconds``."""
    with lock:
        ready.set()
        time.sleep(seconds)


def hold_until(lock: Any, ready: Any, release: Any) -> None:
    with lock:
        ready.set()
        release.wait(20)


def toggle_lock(lock: Any, rounds: int, hold_for: float) -> None:
    """Take and release the lock ``rounds`` times; exit 3 if it ever stays stuck."""
    for _ in range(rounds):
        if not lock.acquire(timeout=10):
            sys.exit(3)
        time.sleep(hold_for)
        lock.release()
        time.sleep(hold_for / 2)


def set_event_after(event: Any, delay: float) -> None:
    time.sleep(delay)
    event.set()


def wait_event(event: Any, timeout: float) -> None:
    sys.exit(0 if event.wait(timeout) else 3)


def release_after(sem: Any, delay: float, times: int = 1) -> None:
    time.sleep(delay)
    for _ in range(times):
        sem.release()


def notify_after(cond: Any, value: Any, delay: float, n: int | None) -> None:
    """Set ``value`` under the condition and notify ``n`` waiters (all if None)."""
    time.sleep(delay)
    with cond:
        value.value += 1
        if n is None:
            cond.notify_all()
        else:
            cond.notify(n)


def wait_condition(cond: Any, value: Any, timeout: float, sleeping: Any = None) -> None:
    """Wait for ``value`` > 0; exit 0 if seen, 3 if not. ``sleeping`` is released while
    the lock is held, so whoever takes the lock after acquiring it knows this child waits."""
    with cond:
        if sleeping is not None:
            sleeping.release()
        ok = cond.wait_for(lambda: value.value > 0, timeout)
    sys.exit(0 if ok else 3)


def condition_sleeper(cond: Any, sleeping: Any, timeout: float) -> None:
    """Wait once on ``cond``: exit 0 if notified, 3 on timeout (``sleeping`` as above)."""
    with cond:
        sleeping.release()
        woken = cond.wait(timeout)
    sys.exit(0 if woken else 3)


def notify_all_then_wait(cond: Any, times: int, timeout: float) -> None:
    """notify_all, then wait ``times`` times under the same hold: none of those waits may
    take a wake-up meant for the waiters notified. Exit 0 if all timed out, 3 if not."""
    with cond:
        cond.notify_all()
        results = [cond.wait(timeout) for _ in range(times)]
    sys.exit(0 if not any(results) else 3)


def barrier_rounds(barrier: Any, rounds: int, timeout: float) -> None:
    """Pass ``barrier`` ``rounds`` times; exit 0, or 3 if it broke (a timeout, say)."""
    import threading

    try:
        for _ in range(rounds):
            barrier.wait(timeout)
    except threading.BrokenBarrierError:
        sys.exit(3)


def barrier_wait(barrier: Any, out: Any) -> None:
    try:
        out.put(("index", barrier.wait(10)))
    except Exception as error:
        out.put(("error", type(error).__name__))


def increment(value: Any, times: int) -> None:
    for _ in range(times):
        with value.get_lock():
            value.value += 1


def increment_array(arr: Any, times: int) -> None:
    for _ in range(times):
        with arr.get_lock():
            for i in range(len(arr)):
                arr[i] += 1


def init_shared(value: Any) -> None:
    STATE["value"] = value


def bump_shared(_: object = None) -> int:
    value = STATE["value"]
    with value.get_lock():
        value.value += 1
        return int(value.value)


def use_everything(things: dict[str, Any], out: Any) -> None:
    """Exercise each primitive's blocking API in a child and report the results."""
    report: dict[str, Any] = {}
    report["queue"] = things["queue"].get(timeout=10)
    things["jqueue"].put("from child")
    report["simple"] = things["simple"].get()
    conn = things["conn"]
    report["conn"] = conn.recv()
    conn.send("pong")
    for name in ("lock", "rlock", "sem", "bsem"):
        primitive = things[name]
        ok = primitive.acquire(timeout=5)
        report[name] = ok
        if ok:
            primitive.release()
    report["event"] = things["event"].wait(5)
    cond = things["cond"]
    with cond:
        cond.notify_all()
        report["cond"] = True
    report["value"] = things["value"].value
    things["value"].value = 99
    report["array"] = list(things["array"])
    things["array"][0] = -1
    out.put(report)


# ---------------------------------------------------------------- parent-side helpers


async def while_ticking(func: Any, *args: Any, period: float = 0.001) -> tuple[Any, float, int]:
    """Run ``await func(*args)`` beside a task that sleeps ``period`` in a loop.

    Returns the result, the longest gap the ticker saw between two wake-ups (how
    long the event loop was blocked, at worst), and how many times it ticked.
    """
    import anyio

    gaps = [0.0]
    done = anyio.Event()
    result: list[Any] = []
    error: list[BaseException] = []

    async def tick() -> None:
        last = time.monotonic()
        while not done.is_set():
            await anyio.sleep(period)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await anyio.sleep(0.01)
        try:
            result.append(await func(*args))
        except Exception as exc:  # re-raised below, not wrapped in an exception group
            error.append(exc)
        finally:
            done.set()
    if error:
        raise error[0]
    return result[0], max(gaps), len(gaps)


async def while_ticking_then(func: Any, release: Any, ticks_first: int = 50) -> tuple[Any, float, int, bool]:
    """Await ``func()`` beside a ticker (1 ms sleeps) that calls ``release()`` at its
    ``ticks_first``-th tick.

    What ``func`` waits for should happen only after ``release()``: ``func`` then returns
    at all only because the event loop kept running while it waited (a blocked loop
    never ticks, and ``release`` must have a time-out of its own as the way out).
    Returns the result, the longest gap between ticks (the worst stall of the loop),
    the number of ticks, and whether ``release()`` had been called when ``func`` returned.
    """
    import anyio

    gaps = [0.0]
    ticks = 0
    released = False
    done = anyio.Event()

    async def tick() -> None:
        nonlocal ticks, released
        last = time.monotonic()
        while not done.is_set():
            await anyio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            ticks += 1
            if ticks == ticks_first:
                release()
                released = True

    result: list[Any] = []
    error: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        try:
            value = await func()
            result.append((value, released))
        except Exception as exc:  # re-raised below, not wrapped in an exception group
            error.append(exc)
        finally:
            done.set()
    if error:
        raise error[0]
    ((value, released_before),) = result
    return value, max(gaps), ticks, released_before


async def wait_until_asleep(pid: int, timeout: float = 20) -> None:
    """Wait until process ``pid``'s main thread sleeps in the kernel (a blocking call)."""
    import anyio
    import psutil

    proc = psutil.Process(pid)
    with anyio.fail_after(timeout):
        while proc.status() != psutil.STATUS_SLEEPING:
            await anyio.sleep(0.005)


async def cancel_asyncio_task(coro: Any, delay: float = 0.05) -> None:
    """Run ``coro`` as an asyncio task, cancel it after ``delay`` with Task.cancel()."""
    import asyncio

    task = asyncio.ensure_future(coro)
    await asyncio.sleep(delay)
    assert not task.done(), "the awaitable should still be waiting"
    task.cancel()
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.shield(task), 5)
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("Task.cancel() did not cancel the awaitable")
    assert time.monotonic() - started < 2
    assert task.cancelled()


def put_many_then_signal(q: Any, n: int, done: Any) -> None:
    """Puts that return at once (their bytes may still sit in this process's feeder)."""
    for i in range(n):
        q.put((i, b"x" * 20_000))
    done.set()
