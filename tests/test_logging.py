"""Worker log records reach the parent's own logging setup."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiomp

from . import _logwork

pytestmark = pytest.mark.anyio

WORK = "aiomptest.work"
LOGWORK_FILE = Path(_logwork.__file__).resolve()
LOOPS = ["asyncio", "uvloop", "trio"] if sys.platform != "win32" else ["asyncio", "trio"]


def _on_loop(script: str) -> str:
    """A test program whose ``run(main, *args)`` runs on the loop its last argument names."""
    return script.replace(
        "# RUN\n",
        textwrap.dedent(
            """
            def run(main, *args):
                loop = sys.argv[-1]
                options = {"use_uvloop": True} if loop == "uvloop" else {}
                anyio.run(main, *args, backend="trio" if loop == "trio" else "asyncio", backend_options=options)
            """
        ),
    )


class Collect(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@contextlib.contextmanager
def collecting(name: str = "aiomptest", level: int = logging.DEBUG) -> Iterator[Collect]:
    """A handler on logger ``name`` (set to ``level``), removed and reset afterwards."""
    logger = logging.getLogger(name)
    old_level = logger.level
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture
def collect() -> Iterator[Collect]:
    root_level = logging.getLogger().level
    try:
        with collecting() as handler:
            yield handler
    finally:
        logging.getLogger().setLevel(root_level)


def _line_of(marker: str) -> int:
    for number, line in enumerate(LOGWORK_FILE.read_text().splitlines(), 1):
        if marker in line:
            return number
    raise AssertionError(marker)


def _check_hello(record: logging.LogRecord, word: str, pid: int, process_name: str, thread: str, since: float) -> None:
    assert record.name == WORK
    assert record.levelname == "INFO" and record.levelno == logging.INFO
    assert record.getMessage() == f"hello {word}"
    assert record.msg == "hello %s" and record.args == (word,)
    assert record.process == pid != os.getpid()
    assert record.processName == process_name
    assert record.threadName == thread == "MainThread"
    assert record.funcName == "hello"
    assert record.lineno == _line_of("# HELLO-LINE")
    assert Path(record.pathname).resolve() == LOGWORK_FILE
    assert record.module == "_logwork"
    assert since <= record.created <= time.time()  # made in the worker, during the call
    formatted = logging.Formatter("%(levelname)s/%(processName)s/%(process)d %(name)s: %(message)s").format(record)
    assert formatted == f"INFO/{process_name}/{pid} {WORK}: hello {word}"


# -- 1. records reach the parent, from every loop and start method -------------------------------------


async def test_pool_worker_record_reaches_parent(collect: Collect, start_method: str) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(1, context=start_method) as pool:
            since = time.time()
            pid, name, thread = await pool.apply(_logwork.hello, ("pool",))
            assert len(collect.records) == 1  # handled before apply() returned
    assert name == "aiomp-worker-0"
    [record] = collect.records
    _check_hello(record, "pool", pid, name, thread, since)


async def test_process_record_reaches_parent(collect: Collect, start_method: str) -> None:
    with anyio.fail_after(30):
        p = aiomp.Process(target=_logwork.hello, args=("process",), name="log-child", context=start_method)
        since = time.time()
        await p.start()
        await p.join()
        assert len(collect.records) == 1  # handled before join() returned
    assert p.exitcode == 0
    [record] = collect.records
    _check_hello(record, "process", p.pid, "log-child", "MainThread", since)
    p.close()


# -- 2. levels are the parent's, and filter at the source --------------------------------------------


async def test_levels_follow_the_parent(start_method: str) -> None:
    root = logging.getLogger()
    verbose = logging.getLogger("aiomptest.verbose")
    old_root = root.level
    root.setLevel(logging.WARNING)
    verbose.setLevel(logging.DEBUG)
    try:
        with collecting(level=logging.NOTSET) as collect, anyio.fail_after(30):
            async with aiomp.Pool(1, context=start_method) as pool:
                enabled = await pool.apply(_logwork.log_levels)
    finally:
        root.setLevel(old_root)
        verbose.setLevel(logging.NOTSET)
    assert collect.messages() == [
        "warning from aiomptest.work",
        "error from aiomptest.work",
        "debug from aiomptest.verbose",
        "info from aiomptest.verbose",
        "warning from aiomptest.verbose",
        "error from aiomptest.verbose",
    ]
    assert enabled == {
        "work.debug": False,
        "work.info": False,
        "work.warning": True,
        "verbose.debug": True,
        "root.warning": True,
        "root.info": False,
    }


async def test_filtered_records_cost_nothing_in_the_worker() -> None:
    root = logging.getLogger()
    old_root = root.level
    root.setLevel(logging.WARNING)
    try:
        with collecting(level=logging.WARNING) as collect, anyio.fail_after(30):
            async with aiomp.Pool(1) as pool:
                made, debug_on = await pool.apply(_logwork.flood_debug, (200_000,))
    finally:
        root.setLevel(old_root)
    assert debug_on is False
    # Not a record was made for the 200k DEBUG calls (so none was pickled or sent), only
    # the WARNING's: the level check stopped each call at its first line, in the worker.
    assert made == 1
    assert collect.messages() == ["after the flood"]


async def test_logging_disable_is_mirrored() -> None:
    logging.disable(logging.INFO)
    try:
        with collecting() as collect, anyio.fail_after(30):
            async with aiomp.Pool(1) as pool:
                assert await pool.apply(_logwork.log_on, (WORK, logging.INFO, "disabled info")) is False
                assert await pool.apply(_logwork.log_on, (WORK, logging.DEBUG, "disabled debug")) is False
                assert await pool.apply(_logwork.log_on, (WORK, logging.WARNING, "enabled warning")) is True
    finally:
        logging.disable(logging.NOTSET)
    assert collect.messages() == ["enabled warning"]


async def test_disabled_logger_is_mirrored() -> None:
    off = logging.getLogger("aiomptest.off")
    off.disabled = True
    try:
        with collecting() as collect, anyio.fail_after(30):
            p = aiomp.Process(target=_logwork.log_on, args=("aiomptest.off", logging.ERROR, "from off"))
            await p.start()
            await p.join()
            p.close()
            async with aiomp.Pool(1) as pool:
                assert await pool.apply(_logwork.log_on, ("aiomptest.off", logging.ERROR, "from off")) is False
                assert await pool.apply(_logwork.log_on, ("aiomptest.on", logging.ERROR, "from on")) is True
    finally:
        off.disabled = False
    assert collect.messages() == ["from on"]


# -- 3. exceptions and stacks ------------------------------------------------------------------------


async def test_exc_info_and_stack_info(collect: Collect) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            assert await pool.apply(_logwork.log_exceptions) == "ok"
    caught, unpicklable, stack = collect.records

    assert caught.levelname == "ERROR" and caught.getMessage() == "caught it"
    assert caught.exc_text is not None
    assert caught.exc_text.startswith("Traceback (most recent call last):")
    assert "in log_exceptions" in caught.exc_text and "in _explode" in caught.exc_text
    assert 'raise ValueError("exploded on purpose")' in caught.exc_text
    assert caught.exc_text.rstrip().endswith("ValueError: exploded on purpose")
    assert caught.exc_info is not None
    assert caught.exc_info[0] is ValueError
    assert str(caught.exc_info[1]) == "exploded on purpose"
    formatted = logging.Formatter("%(levelname)s %(message)s").format(caught)
    assert formatted.startswith("ERROR caught it\nTraceback (most recent call last):")
    assert "in _explode" in formatted and formatted.endswith("ValueError: exploded on purpose")

    assert unpicklable.getMessage() == "unpicklable error"
    assert unpicklable.exc_text is not None
    assert "Unpicklable: holds a lock" in unpicklable.exc_text
    assert "in log_exceptions" in unpicklable.exc_text
    assert "Unpicklable: holds a lock" in logging.Formatter().format(unpicklable)

    assert stack.getMessage() == "where am I"
    assert stack.exc_text is None and not stack.exc_info
    assert stack.stack_info is not None
    assert stack.stack_info.startswith("Stack (most recent call last):")
    assert "in log_exceptions" in stack.stack_info
    assert "Stack (most recent call last):" in logging.Formatter().format(stack)


# -- 4. odd arguments never lose a record, never break the worker -------------------------------------


def _no_address(text: str) -> str:
    return re.sub(r" at 0x[0-9a-f]+", "", text)


async def test_odd_args_and_extras(collect: Collect) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            assert await pool.apply(_logwork.log_odd_args) == "still working"
            pid, _, _ = await pool.apply(_logwork.hello, ("again",))
            assert await pool.apply(_logwork.log_odd_args) == "still working"
    records = collect.records
    assert len(records) == 21
    assert records[10].getMessage() == "hello again"
    assert {r.process for r in records} == {pid}
    assert [_no_address(r.getMessage()) for r in records[:10]] == [_no_address(r.getMessage()) for r in records[11:]]
    (lam, lock, bad_repr, dict_msg, dec, mapping, plain, extra, extra2, odd_container) = records[:10]

    for r in records:
        assert isinstance(r.getMessage(), str)
        assert r.funcName == "log_odd_args" or r is records[10]

    assert lam.args is None and lam.getMessage().startswith("lambda <function log_odd_args.<locals>.<lambda> at ")
    assert lock.args is None and lock.getMessage().startswith("lock <unlocked _thread.lock object at ")
    assert bad_repr.args is None
    assert "bad repr %s" in bad_repr.getMessage() and "formatting failed" in bad_repr.getMessage()
    assert "no repr for you" in bad_repr.getMessage()
    assert dict_msg.getMessage() == "{'a': 1}"
    assert dec.args is None and dec.getMessage() == "decimal 1.5"
    assert mapping.msg == "mapping %(a)s-%(b)s" and mapping.args == {"a": 1, "b": "two"}
    assert mapping.getMessage() == "mapping 1-two"
    assert plain.args == ("s", 7, 2.5, b"by", None)
    assert plain.getMessage() == "plain s 7 2.5 b'by' None"

    assert extra.ctx == {"a": [1, 2]}  # type: ignore[attr-defined]
    assert isinstance(extra.obj, str) and "_thread.lock" in extra.obj  # type: ignore[attr-defined]
    assert extra2.deep == "[[[[1]]]]"  # type: ignore[attr-defined]  # too deep: its repr
    assert extra2.bad == "<unrepresentable BadRepr>"  # type: ignore[attr-defined]
    assert extra2.nested == "[<Nested object>]"  # type: ignore[attr-defined]
    assert extra2.fine == (1, "x", None)  # type: ignore[attr-defined]
    assert odd_container.args is None and odd_container.getMessage() == "args [1, 2] {'k': <Nested object>}"


async def test_bad_format_string_loses_nothing(collect: Collect) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            assert await pool.apply(_logwork.log_bad_format) == "still working"
            await pool.apply(_logwork.hello, ("next task",))
    bad, after, hello = collect.records
    assert bad.funcName == "log_bad_format" and bad.lineno == _line_of("formatting fails")
    assert after.getMessage() == "after the bad one"
    assert hello.getMessage() == "hello next task"


async def test_bad_format_string_arrives_preformatted(collect: Collect) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            assert await pool.apply(_logwork.log_bad_format) == "still working"
    bad = collect.records[0]
    assert bad.args is None
    assert "'%d'" in bad.getMessage() and "formatting failed" in bad.getMessage()


async def test_unrebuildable_exception_keeps_its_text(collect: Collect) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            await pool.apply(_logwork.log_unrebuildable)
    [record] = collect.records
    assert record.getMessage() == "needs two"
    assert record.exc_text is not None
    assert 'raise NeedsTwo("first", "second")' in record.exc_text
    assert record.exc_text.rstrip().endswith("NeedsTwo: first")
    assert "NeedsTwo: first" in logging.Formatter().format(record)


async def test_big_record_larger_than_the_socket_buffer(collect: Collect) -> None:
    size = 12 << 20
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            assert await pool.apply(_logwork.log_big, (size,)) == size
            assert len(collect.records) == 1
        async with aiomp.Process(target=_logwork.log_big, args=(size,)):
            pass
        assert len(collect.records) == 2
    for record in collect.records:
        assert record.getMessage() == "big " + "x" * size
    collect.records.clear()  # 24 MB


async def test_big_bytes_in_extra_arrive_in_order(collect: Collect) -> None:
    # Records of every size on the wire: small, a body read whole, and bodies read
    # in slices (one bigger than the socket buffer), then os._exit at once.
    sizes = [10, 300_000, 6 << 20, 0, 2 << 20]
    expected = [message for i in range(len(sizes)) for message in (f"small {i}", f"blob {i}")]
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            assert await pool.apply(_logwork.log_blobs, (sizes,)) == len(sizes)
            assert collect.messages() == expected  # handled before the result
        async with aiomp.Process(target=_logwork.log_blobs_then_exit, args=(sizes,)) as p:
            pass
    assert p.exitcode == 0
    assert collect.messages() == expected * 2
    blobs = [record.blob for record in collect.records if record.getMessage().startswith("blob")]
    assert [(len(blob), blob[:1]) for blob in blobs] == [(size, bytes([i])[:size]) for i, size in enumerate(sizes)] * 2
    collect.records.clear()  # 16 MB


async def test_the_parents_record_factory_makes_the_records(collect: Collect) -> None:
    class Tagged(logging.LogRecord):
        pass

    factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(Tagged)
    try:
        with anyio.fail_after(30):
            async with aiomp.Process(target=_logwork.warn, args=("made by the factory",)):
                pass
    finally:
        logging.setLogRecordFactory(factory)
    [record] = collect.records
    assert type(record) is Tagged
    assert record.getMessage() == "made by the factory"


# -- 5. ordering -------------------------------------------------------------------------------------------


async def test_records_are_handled_before_the_result(collect: Collect) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(2) as pool:
            for round_ in range(5):
                before = len(collect.records)
                await pool.apply(_logwork.log_seq, (f"apply{round_}", 300))
                assert len(collect.records) == before + 300
            before = len(collect.records)
            await pool.starmap(_logwork.log_seq, [("map", 200)] * 6)
            assert len(collect.records) == before + 1200
            before = len(collect.records)
            async for _ in pool.imap_unordered(_logwork.log_imap, range(4)):
                pass
            assert len(collect.records) == before + 400
            result = pool.apply_async(_logwork.log_seq, ("async", 250))
            await result
            assert len(collect.records) == before + 650


async def test_one_workers_records_arrive_in_order(collect: Collect) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            await pool.apply(_logwork.log_seq, ("seq", 5000))
    assert [r.getMessage() for r in collect.records] == [f"seq {i}" for i in range(5000)]


async def test_two_workers_concurrently_each_in_order(collect: Collect) -> None:
    barrier = aiomp.Barrier(2)  # both workers start logging at once
    with anyio.fail_after(30):
        async with aiomp.Pool(2, initializer=_logwork.keep_barrier, initargs=(barrier,)) as pool:
            pids = await pool.starmap(_logwork.log_seq_together, [("a", 3000), ("b", 3000)], chunksize=1)
    assert len(set(pids)) == 2
    for tag, pid in zip("ab", pids, strict=True):
        mine = [r.getMessage() for r in collect.records if r.process == pid]
        assert mine == [f"{tag} {i}" for i in range(3000)]
    assert len(collect.records) == 6000


async def test_async_tasks_records_before_their_results(collect: Collect, anyio_backend: Any) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            pids = await pool.starmap(_logwork.alog, [(f"t{i}", 50) for i in range(4)])
            assert len(collect.records) == 200
    for i in range(4):
        mine = [r.getMessage() for r in collect.records if r.getMessage().startswith(f"t{i} ")]
        assert mine == [f"t{i} {j}" for j in range(50)]
    assert {r.process for r in collect.records} == set(pids)


async def test_nested_pool_in_a_process(collect: Collect, start_method: str) -> None:
    with anyio.fail_after(30):
        async with aiomp.Process(
            target=_logwork.nested_pool, args=(start_method,), name="middle", context=start_method
        ) as p:
            pass
    assert p.exitcode == 0
    hello, caught, unpicklable, stack, done = collect.records
    assert hello.getMessage() == "hello grandchild" and hello.processName == "aiomp-worker-0"
    assert hello.process not in (os.getpid(), p.pid)
    assert caught.exc_text is not None and caught.exc_text.rstrip().endswith("ValueError: exploded on purpose")
    assert unpicklable.exc_text is not None and "Unpicklable: holds a lock" in unpicklable.exc_text
    assert stack.stack_info is not None and "in log_exceptions" in stack.stack_info
    assert done.getMessage() == "child done" and done.processName == "middle" and done.process == p.pid


# -- 6. nothing is lost when a child dies ------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "args", "exitcode", "message"),
    [
        (_logwork.log_then_exit, (0,), 0, "last words before os._exit(0)"),
        (_logwork.log_then_raise, (), 1, "last words before raising"),
        (_logwork.log_then_sigkill, (), -signal.SIGKILL, "last words before SIGKILL"),
    ],
    ids=["os_exit", "raise", "sigkill"],
)
async def test_process_last_words_arrive(
    collect: Collect, target: Any, args: tuple[Any, ...], exitcode: int, message: str
) -> None:
    with anyio.fail_after(30):
        p = aiomp.Process(target=target, args=args)
        await p.start()
        await p.join()
        assert collect.messages() == [message]
    assert p.exitcode == exitcode
    assert collect.records[0].process == p.pid
    p.close()


async def test_process_many_records_then_os_exit(collect: Collect) -> None:
    with anyio.fail_after(30):
        async with aiomp.Process(target=_logwork.log_many_then_exit, args=(3000,)) as p:
            pass
        assert len(collect.records) == 3000
    assert p.exitcode == 0
    assert [r.getMessage().split()[1] for r in collect.records] == [str(i) for i in range(3000)]


@pytest.mark.parametrize("how", ["os_exit", "sigkill", "many"])
async def test_pool_worker_death_delivers_records_first(collect: Collect, how: str) -> None:
    target, args, expected = {
        "os_exit": (_logwork.log_then_exit, (1,), ["last words before os._exit(1)"]),
        "sigkill": (_logwork.log_then_sigkill, (), ["last words before SIGKILL"]),
        # Many: most of them are still in the socket when the worker's exit is noticed.
        "many": (_logwork.log_many_then_exit, (3000,), [f"many {i} {'x' * 200}" for i in range(3000)]),
    }[how]
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            with pytest.raises(aiomp.WorkerDiedError):
                try:
                    await pool.apply(target, args)
                finally:
                    seen_when_raised = collect.messages()
            assert seen_when_raised == expected
            # The replacement worker forwards too.
            pid, _, _ = await pool.apply(_logwork.hello, ("replacement",))
    assert collect.messages()[-1] == "hello replacement"
    assert collect.records[-1].process == pid != collect.records[0].process


async def test_cancelled_task_records_are_handled_by_pool_exit(collect: Collect, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            with anyio.move_on_after(20) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pool.apply, _logwork.log_then_sleep, (500, str(marker), 30))
                    while not marker.exists():
                        await anyio.sleep(0.01)
                    tg.cancel_scope.cancel()
            assert not scope.cancelled_caught
        assert collect.messages() == [f"before sleep {i}" for i in range(500)]


async def test_cancelled_process_block_still_delivers(collect: Collect, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with anyio.fail_after(30):
        with anyio.CancelScope() as scope:
            async with aiomp.Process(target=_logwork.log_then_sleep, args=(500, str(marker), 30)) as p:
                while not marker.exists():
                    await anyio.sleep(0.01)
                scope.cancel()
                await anyio.sleep(30)
        assert collect.messages() == [f"before sleep {i}" for i in range(500)]
    assert p.exitcode == -signal.SIGTERM


async def test_close_without_join_handles_what_arrived(collect: Collect) -> None:
    with anyio.fail_after(30):
        p = aiomp.Process(target=_logwork.log_many_then_exit, args=(300,))
        await p.start()
        while p.is_alive():
            await anyio.sleep(0.01)
    p.close()
    assert len(collect.records) == 300


async def test_failed_start_leaks_nothing(collect: Collect) -> None:
    p = aiomp.Process(target=_logwork.hello, args=(threading.Lock(),))
    with pytest.raises(TypeError), anyio.fail_after(30):
        await p.start()
    assert collect.records == []  # the autouse fixture checks no descriptor is left open


async def test_initializer_records_arrive(collect: Collect, start_method: str) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(2, initializer=_logwork.init_logs, initargs=("hi",), context=start_method) as pool:
            pids = set(await pool.starmap(_logwork.log_seq, [("task", 0, 0.1)] * 4, chunksize=1))
            mine = [r for r in collect.records if r.funcName == "init_logs"]
            assert {r.process for r in mine} >= pids  # each worker's before its first result
    mine = [r for r in collect.records if r.funcName == "init_logs"]
    assert len(mine) == 2
    assert {r.getMessage() for r in mine} == {"initializer says hi"}
    assert {r.processName for r in mine} == {"aiomp-worker-0", "aiomp-worker-1"}


# -- 7. threads in a worker ----------------------------------------------------------------------------


async def test_two_threads_logging_at_once(collect: Collect) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(1) as pool:
            assert await pool.apply(_logwork.log_from_two_threads, (400,)) == "done"
            assert len(collect.records) == 800
    by_thread: dict[str, list[str]] = {}
    for r in collect.records:
        assert _logwork.check_payload(r.getMessage()), r.getMessage()[:80]
        by_thread.setdefault(r.threadName or "", []).append(r.getMessage())
    assert set(by_thread) == {"MainThread", "logger-thread"}
    assert [m.split(":")[1] for m in by_thread["logger-thread"]] == [str(i) for i in range(400)]
    assert [m.split(":")[1] for m in by_thread["MainThread"]] == [str(i) for i in range(400)]
    assert all(m.startswith("thread:") for m in by_thread["logger-thread"])


# -- 8. forward_logs=False -------------------------------------------------------------------------------


async def test_forward_logs_false(collect: Collect) -> None:
    with anyio.fail_after(30):
        async with aiomp.Pool(1, forward_logs=False) as pool:
            pid, _, _ = await pool.apply(_logwork.hello, ("unforwarded",))
            assert pid != os.getpid()
            await pool.apply(_logwork.warn, ("unforwarded warning",))
        async with aiomp.Process(target=_logwork.hello, args=("unforwarded",), forward_logs=False) as p:
            pass
    assert p.exitcode == 0
    assert collect.records == []


def test_forward_logs_must_be_a_bool() -> None:
    for value in (1, "yes", None):
        with pytest.raises(TypeError, match="forward_logs"):
            aiomp.Pool(1, forward_logs=value)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="forward_logs"):
            aiomp.Process(target=_logwork.identity, forward_logs=value)  # type: ignore[arg-type]


# -- 9. get_logger / log_to_stderr ---------------------------------------------------------------------


@pytest.fixture
def aiomp_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("aiomp")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    try:
        yield logger
    finally:
        for handler in list(logger.handlers):
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        logger.propagate, logger.level = propagate, level
        logger.manager._clear_cache()  # type: ignore[attr-defined]


def test_get_logger_and_log_to_stderr(aiomp_logger: logging.Logger) -> None:
    assert aiomp.get_logger() is aiomp_logger is logging.getLogger("aiomp")
    before = list(aiomp_logger.handlers)
    old_level = aiomp_logger.level
    assert aiomp.log_to_stderr() is aiomp_logger
    assert aiomp.log_to_stderr() is aiomp_logger
    added = [h for h in aiomp_logger.handlers if h not in before]
    assert len(added) == 1
    [handler] = added
    assert isinstance(handler, logging.StreamHandler)
    assert handler.formatter is not None
    assert handler.formatter._fmt == "[%(levelname)s/%(processName)s] %(message)s"
    assert aiomp_logger.propagate is False
    assert aiomp_logger.level == old_level  # no level given: unchanged
    assert aiomp.log_to_stderr(logging.DEBUG) is aiomp_logger
    assert aiomp_logger.level == logging.DEBUG
    assert aiomp.log_to_stderr("WARNING").level == logging.WARNING
    assert len([h for h in aiomp_logger.handlers if h not in before]) == 1
    record = logging.LogRecord("aiomp", logging.INFO, __file__, 1, "hi %s", ("there",), None)
    record.processName = "proc-9"
    assert handler.format(record) == "[INFO/proc-9] hi there"


@pytest.mark.parametrize(
    ("level", "error"),
    [
        (1.5, TypeError),
        (True, TypeError),
        (b"INFO", TypeError),
        ([], TypeError),
        ("NOPE", ValueError),
        (-1, ValueError),
    ],
)
def test_log_to_stderr_bad_level(aiomp_logger: logging.Logger, level: Any, error: type[Exception]) -> None:
    before, old_level = list(aiomp_logger.handlers), aiomp_logger.level
    with pytest.raises(error, match="level"):
        aiomp.log_to_stderr(level)
    assert aiomp_logger.handlers == before and aiomp_logger.level == old_level


SCRIPT = textwrap.dedent(
    """
    import logging
    import sys

    import anyio

    import aiomp


    def work():
        aiomp.get_logger().info("hello via get_logger")
        aiomp.get_logger().debug("hidden debug")


    def unforwarded():
        logging.getLogger("plain").warning("lastresort warning")
        logging.getLogger("plain").info("lost info")


    async def main(context):
        aiomp.log_to_stderr("INFO")
        async with aiomp.Pool(1, context=context) as pool:
            await pool.apply(work)
        async with aiomp.Process(target=work, name="named-child", context=context):
            pass
        async with aiomp.Process(target=unforwarded, forward_logs=False, context=context):
            pass
        print("done", flush=True)


    # RUN
    if __name__ == "__main__":
        run(main, sys.argv[1])
    """
)


@pytest.mark.parametrize("loop", LOOPS)
def test_log_to_stderr_shows_worker_records(tmp_path: Path, loop: str, start_method: str) -> None:
    script = tmp_path / "log_to_stderr_script.py"
    script.write_text(_on_loop(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script), start_method, loop], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    lines = done.stderr.splitlines()
    assert "[INFO/aiomp-worker-0] hello via get_logger" in lines
    assert "[INFO/named-child] hello via get_logger" in lines
    assert "lastresort warning" in lines  # the unforwarded child's own stderr
    assert "hidden debug" not in done.stderr and "lost info" not in done.stderr
    assert len(lines) == 3, done.stderr


# -- 10. a broken handler or filter in the parent ------------------------------------------------------


class Raising(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.calls += 1
        if "boom" in record.getMessage():
            raise RuntimeError("handler broke on purpose")


def _raising_filter(record: logging.LogRecord) -> bool:
    if "filterboom" in record.getMessage():
        raise RuntimeError("filter broke on purpose")
    return True


async def test_broken_handler_and_filter_do_not_stop_the_listener(
    collect: Collect, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = logging.getLogger("aiomptest")
    raising = Raising()
    logger.addHandler(raising)
    work = logging.getLogger(WORK)  # a logger's filters apply to the records it handles itself
    work.addFilter(_raising_filter)
    try:
        with anyio.fail_after(30):
            async with aiomp.Pool(1) as pool:
                await pool.apply(_logwork.warn, ("boom 1",))
                await pool.apply(_logwork.warn, ("fine 2",))
                await pool.apply(_logwork.warn, ("filterboom 3",))
                await pool.apply(_logwork.warn, ("fine 4",))
            p = aiomp.Process(target=_logwork.warn, args=("boom 5",))
            await p.start()
            await p.join()
            p.close()
            async with aiomp.Process(target=_logwork.warn, args=("fine 6",)):
                pass
    finally:
        logger.removeHandler(raising)
        work.removeFilter(_raising_filter)
    # Handlers run in the order they were added: collect saw "boom" records before Raising broke.
    assert collect.messages() == ["boom 1", "fine 2", "fine 4", "boom 5", "fine 6"]
    assert raising.calls == 5
    # Reported on stderr as Handler.handleError does (not through logging: the
    # failing handler may be the root's), with the handler's traceback.
    err = capsys.readouterr().err
    assert err.count("--- Logging error in a handler, for a record forwarded from a worker by aiomp ---") == 3
    assert "broke on purpose" in err


ALWAYS_RAISING_SCRIPT = textwrap.dedent(
    """
    import logging
    import os
    import sys
    import time

    import anyio

    import aiomp

    HERE = os.path.dirname(os.path.abspath(__file__))
    seen = []


    def broke_on(message):
        return os.path.join(HERE, f"broke on {message}")


    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())


    class Raising(logging.Handler):
        def emit(self, record):
            if record.name == "w":
                open(broke_on(record.getMessage()), "w").close()
            if record.name in ("w", "aiomp"):  # the listener's own report fails too
                raise RuntimeError("root handler broke on purpose")


    def work(i):
        logging.getLogger("w").warning("record %d.a", i)
        # Wait until the parent has handled .a (and broken on it) before .b comes.
        deadline = time.monotonic() + 20
        while not os.path.exists(broke_on(f"record {i}.a")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the parent never handled record {i}.a")
            time.sleep(0.005)
        logging.getLogger("w").warning("record %d.b", i)
        return i


    async def main(kind):
        with anyio.fail_after(30):
            if kind == "pool":
                async with aiomp.Pool(1) as pool:
                    for i in range(3):
                        await pool.apply(work, (i,))
            else:
                for i in range(3):
                    async with aiomp.Process(target=work, args=(i,)):
                        pass
        print(" ".join(seen), flush=True)


    # RUN
    if __name__ == "__main__":
        logging.getLogger("w").addHandler(Collect())
        logging.getLogger().addHandler(Raising())
        run(main, sys.argv[1])
    """
)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("kind", ["pool", "process"])
def test_root_handler_that_always_raises_does_not_stop_the_listener(tmp_path: Path, kind: str, loop: str) -> None:
    # In a subprocess: once the listener breaks, the pool or the event loop is left in a state that
    # would spill into the tests after this one.
    script = tmp_path / "always_raising.py"
    script.write_text(_on_loop(ALWAYS_RAISING_SCRIPT))
    done = subprocess.run(
        [sys.executable, "-X", "dev", str(script), kind, loop], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ResourceWarning" not in done.stderr
    assert done.stdout == "record 0.a record 0.b record 1.a record 1.b record 2.a record 2.b\n"


DUPLICATE_SCRIPT = textwrap.dedent(
    """
    import logging
    import sys

    import anyio

    import aiomp

    # Module level, as many applications do: a spawn or forkserver worker runs this
    # again when it imports the main module.
    log = logging.getLogger("app")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("APP %(processName)s %(message)s"))
    log.addHandler(handler)


    def work():
        log.warning("from the worker")


    async def main(context):
        async with aiomp.Pool(1, context=context) as pool:
            await pool.apply(work)


    if __name__ == "__main__":
        anyio.run(main, sys.argv[1])
    """
)


def test_named_logger_handler_made_at_import_prints_once(tmp_path: Path, start_method: str) -> None:
    script = tmp_path / "duplicate.py"
    script.write_text(DUPLICATE_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), start_method], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "APP aiomp-worker-0 from the worker\n"


async def test_pool_workers_follow_later_level_changes(collect: Collect) -> None:
    """A level set in the parent after the pool started reaches its running workers."""
    logger = logging.getLogger("aiomptest.later")
    try:
        logger.setLevel(logging.WARNING)
        with anyio.fail_after(30):
            async with aiomp.Pool(1) as pool:
                assert await pool.apply(_logwork.log_on, ("aiomptest.later", logging.INFO, "dropped")) is False
                logger.setLevel(logging.INFO)  # e.g. an admin endpoint turning on more logging
                assert await pool.apply(_logwork.log_on, ("aiomptest.later", logging.INFO, "now on")) is True
                logging.disable(logging.INFO)
                assert await pool.apply(_logwork.log_on, ("aiomptest.later", logging.INFO, "disabled")) is False
                logging.disable(logging.NOTSET)
                logger.setLevel(logging.NOTSET)  # back to the parent's "aiomptest" level (DEBUG)
                assert await pool.apply(_logwork.log_on, ("aiomptest.later", logging.DEBUG, "debug")) is True
    finally:
        logging.disable(logging.NOTSET)
        logger.setLevel(logging.NOTSET)
    assert collect.messages() == ["now on", "debug"]


FLOODING_CHILD_SCRIPT = textwrap.dedent(
    """
    import logging
    import os
    import signal
    import sys
    import time

    import anyio

    import aiomp


    def flood():
        log = logging.getLogger("flood")
        while True:
            log.warning("record")


    HANDLED = [0]


    class Slow(logging.Handler):
        def emit(self, record):
            HANDLED[0] += 1
            end = time.perf_counter() + 20e-6  # slower than the child writes
            while time.perf_counter() < end:
                pass


    PIDS = []
    RETURNED = []


    async def main():
        p = aiomp.Process(target=flood, daemon=True)
        await p.start()
        PIDS.append(p.pid)
        with anyio.fail_after(20):
            while HANDLED[0] < 1000:  # the flood is on
                await anyio.sleep(0.001)
        RETURNED.append(time.monotonic())  # without joining: the loop shuts down under the flood


    # RUN
    if __name__ == "__main__":
        logging.root.handlers[:] = [Slow()]
        try:
            run(main)
        finally:
            if PIDS:
                os.kill(PIDS[0], signal.SIGKILL)
        print(f"shut down in {time.monotonic() - RETURNED[0]:.1f}s", flush=True)
    """
)


@pytest.mark.parametrize("loop", LOOPS)
def test_loop_shuts_down_while_an_unjoined_child_floods(tmp_path: Path, loop: str) -> None:
    """Closing a channel handles what is there, not what a live child goes on writing."""
    script = tmp_path / "flooding_child.py"
    script.write_text(_on_loop(FLOODING_CHILD_SCRIPT))
    done = subprocess.run([sys.executable, str(script), loop], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    shutdown = re.fullmatch(r"shut down in (\d+\.\d)s\n", done.stdout)
    assert shutdown is not None, done.stdout
    # The bound is the feature: the shutdown ends at all (a listener chasing the flood never
    # would); what was already in the socket takes milliseconds, seconds leave a busy machine room.
    assert float(shutdown.group(1)) < 10, done.stdout


QUICK_CHILD_SCRIPT = textwrap.dedent(
    """
    import gc
    import multiprocessing.connection
    import sys

    import anyio

    import aiomp


    def nothing():
        pass


    async def main():
        for _ in range(3):
            p = aiomp.Process(target=nothing)
            await p.start()
            # The child exits before this loop runs again, so before the task that listens
            # to its log channel has had its first step.
            multiprocessing.connection.wait([p.sentinel], 30)
            await p.join()
            print("exit", p.exitcode, flush=True)


    # RUN
    if __name__ == "__main__":
        run(main)
        gc.collect()  # what a longer program does sooner or later
    """
)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_quick_child_leaves_no_unawaited_listener(tmp_path: Path, loop: str) -> None:
    """A child joined before its log listener's first step: no 'coroutine was never awaited'
    at the loop's shutdown (it was reported on asyncio, every run, before 7e4c120)."""
    script = tmp_path / "quick_child.py"
    script.write_text(_on_loop(QUICK_CHILD_SCRIPT))
    done = subprocess.run([sys.executable, str(script), loop], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exit 0\n" * 3
    assert done.stderr == ""


# -- records are handled in the context of the call that submitted the task ---------------------------

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestId(logging.Filter):
    """What a server's request-id filter does: tag the record from a context variable."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


async def test_records_are_handled_in_the_callers_context(collect: Collect, start_method: str) -> None:
    collect.addFilter(_RequestId())

    async def request(request_id: str, call: Callable[[], Awaitable[object]]) -> None:
        REQUEST_ID.set(request_id)  # this task's own context, as a server's middleware does
        await call()

    with anyio.fail_after(60):
        pool = aiomp.Pool(2, context=start_method, initializer=_logwork.init_logs, initargs=("boot",))
        async with pool, anyio.create_task_group() as tg:
            tg.start_soon(request, "r1", lambda: pool.apply(_logwork.log_seq, ("r1", 300)))
            tg.start_soon(request, "r2", lambda: pool.apply(_logwork.log_seq, ("r2", 300)))
            tg.start_soon(request, "r3", lambda: pool.starmap(_logwork.log_seq, [("r3", 50)] * 4, chunksize=1))
            tg.start_soon(request, "r4", lambda: pool.apply(_logwork.alog, ("r4", 50)))
            tg.start_soon(request, "r5", lambda: _drain(pool.imap_unordered(_logwork.log_imap, range(2))))
    tagged = [r for r in collect.records if not r.getMessage().startswith("initializer")]
    assert len(tagged) == 300 + 300 + 200 + 50 + 200
    for record in tagged:
        expected = record.getMessage().split()[0]
        assert record.request_id == ("r5" if expected.startswith("imap") else expected)  # type: ignore[attr-defined]
    # Records logged outside any task (the initializer's) keep the listener's own context.
    boot = [r for r in collect.records if r.getMessage() == "initializer says boot"]
    assert boot and all(r.request_id == "-" for r in boot)  # type: ignore[attr-defined]


async def _drain(iterator: AsyncIterator[object]) -> None:
    async for _ in iterator:
        pass
