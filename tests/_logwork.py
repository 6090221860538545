"""Functions that the logging tests run in workers and children.

Module level, so spawn and forkserver children can import them. They log with
plain ``logging`` calls and configure nothing: the parent's setup decides what
happens to their records.
"""

from __future__ import annotations

import decimal
import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("aiomptest.work")


def identity(_: object = None) -> tuple[int, str, str]:
    """What this process and thread call themselves."""
    return os.getpid(), multiprocessing.current_process().name, threading.current_thread().name


def hello(word: str) -> tuple[int, str, str]:
    log.info("hello %s", word)  # HELLO-LINE
    return identity()


def log_levels() -> dict[str, bool]:
    """Log at every level on two loggers; report what the child thinks is enabled."""
    verbose = logging.getLogger("aiomptest.verbose")
    for logger in (log, verbose):
        logger.debug("debug from %s", logger.name)
        logger.info("info from %s", logger.name)
        logger.warning("warning from %s", logger.name)
        logger.error("error from %s", logger.name)
    return {
        "work.debug": log.isEnabledFor(logging.DEBUG),
        "work.info": log.isEnabledFor(logging.INFO),
        "work.warning": log.isEnabledFor(logging.WARNING),
        "verbose.debug": verbose.isEnabledFor(logging.DEBUG),
        "root.warning": logging.getLogger().isEnabledFor(logging.WARNING),
        "root.info": logging.getLogger().isEnabledFor(logging.INFO),
    }


def flood_debug(count: int) -> tuple[int, bool]:
    """Log ``count`` DEBUG records, then one WARNING; return how many records were made
    meanwhile (a record filtered at the source is never made) and whether DEBUG is on."""
    made = 0
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        nonlocal made
        made += 1
        return factory(*args, **kwargs)

    logging.setLogRecordFactory(counting)
    try:
        for i in range(count):
            log.debug("flood %d of %d", i, count)
        log.warning("after the flood")
    finally:
        logging.setLogRecordFactory(factory)
    return made, log.isEnabledFor(logging.DEBUG)


def log_on(name: str, level: int, message: str) -> bool:
    logger = logging.getLogger(name)
    logger.log(level, message)
    return logger.isEnabledFor(level) and not logger.disabled


def _explode() -> None:
    raise ValueError("exploded on purpose")


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def log_exceptions() -> str:
    try:
        _explode()
    except ValueError:
        log.exception("caught %s", "it")
    try:
        raise Unpicklable("holds a lock")
    except Unpicklable:
        log.error("unpicklable error", exc_info=True)
    log.warning("where am I", stack_info=True)
    return "ok"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class Nested:
    def __repr__(self) -> str:
        return "<Nested object>"


def log_odd_args() -> str:
    log.info("lambda %s", lambda: 1)
    log.info("lock %s", threading.Lock())
    log.info("bad repr %s", BadRepr())
    log.info({"a": 1})
    log.info("decimal %s", decimal.Decimal("1.5"))
    log.info("mapping %(a)s-%(b)s", {"a": 1, "b": "two"})
    log.info("plain %s %d %.1f %r %s", "s", 7, 2.5, b"by", None)
    log.info("extra", extra={"ctx": {"a": [1, 2]}, "obj": threading.Lock()})
    log.info("extra2", extra={"deep": [[[[1]]]], "bad": BadRepr(), "nested": [Nested()], "fine": (1, "x", None)})
    log.info("args %s %s", [1, 2], {"k": Nested()})
    return "still working"


def log_bad_format() -> str:
    log.info("%d", "x")  # str where %d wants a number: formatting fails
    log.info("after %s", "the bad one")
    return "still working"


def log_seq(tag: str, count: int, pause: float = 0.0) -> int:
    """Log ``count`` records numbered in order; return this process's pid."""
    if pause:
        time.sleep(pause)
    for i in range(count):
        log.info("%s %d", tag, i)
    return os.getpid()


_BARRIER: Any = None


def keep_barrier(barrier: Any) -> None:
    """Pool initializer: a barrier reaches workers at start, not as a task argument."""
    global _BARRIER
    _BARRIER = barrier


def log_seq_together(tag: str, count: int) -> int:
    """``log_seq``, started by every worker at once: they meet at the initializer's barrier."""
    _BARRIER.wait(timeout=30)
    return log_seq(tag, count)


def log_imap(i: int) -> int:
    return log_seq(f"imap{i}", 100)


def log_then_exit(code: int) -> None:
    log.warning("last words before os._exit(%d)", code)
    os._exit(code)


def log_then_raise() -> None:
    log.warning("last words before raising")
    raise RuntimeError("raised on purpose after logging")


def log_then_sigkill() -> None:
    log.warning("last words before SIGKILL")
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)


def log_many_then_exit(count: int) -> None:
    for i in range(count):
        log.info("many %d %s", i, "x" * 200)
    os._exit(0)


def log_then_sleep(count: int, marker: str, seconds: float) -> None:
    for i in range(count):
        log.info("before sleep %d", i)
    Path(marker).write_text("logged")
    time.sleep(seconds)


def init_logs(word: str) -> None:
    log.info("initializer says %s", word)


def _payload(tag: str, i: int) -> str:
    size = 50 + (i * 7919) % 20000
    return f"{tag}:{i}:" + (tag[0] * size)


def check_payload(message: str) -> bool:
    tag, i, body = message.split(":", 2)
    return message == _payload(tag, int(i)) and len(body) > 0


def log_from_two_threads(count: int) -> str:
    def run() -> None:
        for i in range(count):
            log.info("%s", _payload("thread", i))

    thread = threading.Thread(target=run, name="logger-thread")
    thread.start()
    for i in range(count):
        log.info("%s", _payload("main", i))
    thread.join(30)
    return "done"


def warn(message: str) -> None:
    log.warning("%s", message)


async def alog(tag: str, count: int) -> int:
    import asyncio

    for i in range(count):
        log.info("%s %d", tag, i)
        await asyncio.sleep(0)
    return os.getpid()


def log_big(size: int) -> int:
    log.info("big %s", "x" * size)
    return size


def log_blobs(sizes: list[int]) -> int:
    """Small records between records whose ``extra`` holds a ``bytes`` of each size."""
    for i, size in enumerate(sizes):
        log.info("small %d", i)
        log.info("blob %d", i, extra={"blob": bytes([i % 256]) * size})
    return len(sizes)


def log_blobs_then_exit(sizes: list[int]) -> None:
    log_blobs(sizes)
    os._exit(0)


class NeedsTwo(Exception):
    """Pickles, but cannot be rebuilt from its args."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(a)
        self.b = b


def log_unrebuildable() -> None:
    try:
        raise NeedsTwo("first", "second")
    except NeedsTwo:
        log.exception("needs two")


def nested_pool(context: str) -> None:
    """In a child: run a Pool of its own, whose records go through this child to the parent."""
    import anyio

    import aiomp

    async def run() -> None:
        with anyio.fail_after(20):
            async with aiomp.Pool(1, context=context) as pool:
                await pool.apply(hello, ("grandchild",))
                await pool.apply(log_exceptions)

    anyio.run(run)
    log.info("child done")
