"""Whatever happens to the parent, its workers do not outlive it; leaks are reported.

The parent-death and Ctrl-C tests run ``tests/_victim.py`` in its own session
(as a terminal would run a program), with two workers busy (one in a C call
that holds the GIL), then end it and watch the worker processes.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

import aiomp

from . import _work

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
LOOPS = ["asyncio", "uvloop", "trio"] if sys.platform != "win32" else ["asyncio", "trio"]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _read_lines(proc: subprocess.Popen[str], done: Callable[[list[str]], bool], timeout: float = 30) -> list[str]:
    """Lines of ``proc``'s stdout until ``done(lines)``; fails on EOF or after ``timeout`` s.

    Reads the descriptor itself (a text wrapper's buffer would hide lines from ``select``),
    and only whole lines: what follows the last one stays unread for ``communicate``.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not done(lines):
            left = deadline - time.monotonic()
            assert left > 0 and selector.select(left), f"no more output after {timeout} s: {lines}"
            line = b""
            while not line.endswith(b"\n"):  # byte by byte: not a byte past the line
                byte = os.read(fd, 1)
                assert byte, f"the program ended early: {lines}"
                line += byte
            lines.append(line.decode().rstrip("\n"))
    return lines


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll ``condition`` (cheap, observable state) until it holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout} s for {what}"
        time.sleep(0.005)


def _loop_args(loop: str) -> str:
    """How the test programs below run ``main`` on ``loop``."""
    options = '{"use_uvloop": True}' if loop == "uvloop" else "{}"
    return f"backend={'trio' if loop == 'trio' else 'asyncio'!r}, backend_options={options}"


class _Victim:
    def __init__(self, loop: str, start_method: str, *options: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests._victim", loop, start_method, *options],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, like a program run from a shell
        )
        self.workers: list[int] = []
        try:
            lines = _read_lines(self.proc, lambda lines: len(lines) == 2)
            for line in lines:
                kind, pid = line.split()
                assert kind == "worker", line
                self.workers.append(int(pid))
            self._inside_their_tasks()
        except AssertionError as error:
            code, err = self.finish()
            raise AssertionError(f"{error}\nthe program's exit code: {code}, its stderr:\n{err}") from None
        except BaseException:
            self.kill()
            raise

    def _inside_their_tasks(self) -> None:
        """Wait until one worker is deep in its C call and the other asleep.

        Each printed its line as its task began; the busy one then only burns CPU
        (in ``sum``, holding the GIL), the other sleeps in ``time.sleep``.
        """
        procs = [psutil.Process(pid) for pid in self.workers]
        start = [sum(p.cpu_times()[:2]) for p in procs]

        def settled() -> bool:
            burnt = [sum(p.cpu_times()[:2]) - before for p, before in zip(procs, start, strict=True)]
            asleep = [p.status() == psutil.STATUS_SLEEPING for p in procs]
            return any(b >= 0.05 and not s for b, s in zip(burnt, asleep, strict=True)) and any(asleep)

        _wait_until(settled, "one worker computing and the other asleep")

    def wait_for_workers(self, limit: float) -> float:
        """Seconds until every worker has exited (at most ``limit``)."""
        start = time.monotonic()
        while any(_alive(pid) for pid in self.workers) and time.monotonic() - start < limit:
            time.sleep(0.005)
        return time.monotonic() - start

    def finish(self) -> tuple[int | None, str]:
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            err = "(still running)"
        self.kill()
        return self.proc.returncode, err

    def kill(self) -> None:
        for pid in self.workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "os._exit"])
def test_workers_die_with_their_parent(loop: str, start_method: str, how: str) -> None:
    victim = _Victim(loop, start_method)
    try:
        os.kill(victim.proc.pid, signal.SIGUSR1 if how == "os._exit" else getattr(signal, how))
        took = victim.wait_for_workers(5)
        assert not [pid for pid in victim.workers if _alive(pid)], f"workers outlived the parent by {took:.1f} s"
        code, err = victim.finish()
        assert code == {"SIGKILL": -signal.SIGKILL, "SIGTERM": -signal.SIGTERM, "os._exit": 3}[how], err
    finally:
        victim.kill()


@pytest.mark.parametrize("loop", LOOPS)
def test_workers_die_with_a_parent_that_had_forked_another_child(loop: str, start_method: str) -> None:
    victim = _Victim(loop, start_method, "fork")
    try:
        os.kill(victim.proc.pid, signal.SIGKILL)
        took = victim.wait_for_workers(5)
        assert not [pid for pid in victim.workers if _alive(pid)], f"workers outlived the parent by {took:.1f} s"
    finally:
        victim.kill()  # and the forked child, with the victim's process group


_DAEMON = """
import gc, os, sys, weakref
import anyio, aiomp

def busy(i, go):
    os.write(1, f"child {i} {os.getpid()}\\n".encode())
    go.recv()  # until the parent has dropped the other Process object
    os.write(1, f"alive {i}\\n".encode())
    sum(range(10**13))

async def main(method):
    go = [aiomp.Pipe(duplex=False) for _ in range(2)]
    kept = aiomp.Process(target=busy, args=(0, go[0][0]), daemon=True, context=method)
    await kept.start()
    dropped = aiomp.Process(target=busy, args=(1, go[1][0]), daemon=True, context=method)
    await dropped.start()
    collected = weakref.ref(dropped)
    del dropped  # (a ResourceWarning:) the child goes on until this process ends
    gc.collect()
    print("dropped collected", collected() is None, flush=True)
    for _, writer in go:
        await writer.asend("go")  # each child says it is alive after the drop
    await anyio.sleep_forever()

if __name__ == "__main__":
    anyio.run(main, sys.argv[1], LOOP_ARGS)
"""


@pytest.mark.parametrize("loop", LOOPS)
def test_daemon_process_children_die_with_their_parent(tmp_path: Path, loop: str, start_method: str) -> None:
    script = tmp_path / "daemons.py"
    script.write_text(_DAEMON.replace("LOOP_ARGS", _loop_args(loop)))
    proc = subprocess.Popen(
        [sys.executable, "-W", "ignore::ResourceWarning", str(script), start_method],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    children: list[int] = []
    try:
        lines = _read_lines(proc, lambda lines: len(lines) == 5)
        children = [int(line.split()[2]) for line in sorted(lines) if line.startswith("child ")]
        # The dropped Process object is gone, and both children did something after that.
        assert sorted(line for line in lines if not line.startswith("child ")) == [
            "alive 0",
            "alive 1",
            "dropped collected True",
        ], lines
        assert len(children) == 2 and all(_alive(pid) for pid in children)
        os.kill(proc.pid, signal.SIGKILL)
        # The feature is a bound: they die within milliseconds; seconds leave room for a busy machine.
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


_SLOW_IMPORT = """
import os, sys, time
if __name__ == "__mp_main__":
    os.write(1, f"importing {os.getpid()}\\n".encode())
    time.sleep(60)  # a worker importing the main module: Ctrl-C comes meanwhile
import anyio, aiomp

async def main(method):
    async with aiomp.Pool(2, context=method) as pool:
        await pool.apply(os.getpid)

if __name__ == "__main__":
    try:
        anyio.run(main, sys.argv[1], LOOP_ARGS)
    except KeyboardInterrupt:
        print("parent: KeyboardInterrupt", file=sys.stderr)
"""


@pytest.mark.parametrize("loop", LOOPS)
def test_ctrl_c_while_workers_start_prints_nothing_from_them(tmp_path: Path, loop: str, start_method: str) -> None:
    """SIGINT reaches workers still importing the main module (before they can ignore it)."""
    script = tmp_path / "slow_import.py"
    script.write_text(_SLOW_IMPORT.replace("LOOP_ARGS", _loop_args(loop)))
    proc = subprocess.Popen(
        [sys.executable, str(script), start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    workers: list[int] = []
    try:
        # Both workers are importing the main module now (each said so, then sleeps there).
        workers = [int(line.split()[1]) for line in _read_lines(proc, lambda lines: len(lines) == 2)]
        os.killpg(proc.pid, signal.SIGINT)
        # They would sleep a minute: the parent's exit must end them (and close their stderr).
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert err.strip() == "parent: KeyboardInterrupt", err
    assert out == ""
    assert not [pid for pid in workers if _alive(pid)]


@pytest.mark.parametrize("loop", LOOPS)
def test_ctrl_c_gives_one_keyboard_interrupt_and_no_worker_output(loop: str, start_method: str) -> None:
    victim = _Victim(loop, start_method)
    try:
        os.killpg(victim.proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        took = victim.wait_for_workers(5)
        assert not [pid for pid in victim.workers if _alive(pid)], f"workers outlived Ctrl-C by {took:.1f} s"
        code, err = victim.finish()
        assert code == -signal.SIGINT, err
        assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt", err
        # One KeyboardInterrupt traceback from the parent; under asyncio, chained to the
        # CancelledError that asyncio.run uses to stop the main task.
        assert err.count("Traceback (most recent call last)") <= (1 if loop == "trio" else 2), err
        assert "aiomp-worker" not in err and "Process " not in err, err  # no worker spoke
        assert "resource_tracker" not in err and "leaked" not in err, err
    finally:
        victim.kill()


_ABANDON = """
import gc, os, sys, time
import anyio, psutil
import aiomp

def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

async def main(method):
    pool = aiomp.Pool(1, context=method)
    await pool.__aenter__()
    pid = await pool.apply(os.getpid)
    print("worker", pid, flush=True)
    return pid  # the pool is dropped, never exited

if __name__ == "__main__":
    pid = anyio.run(main, sys.argv[1], LOOP_ARGS)
    gc.collect()
    # The pool warned and killed its worker: see that while this process still runs
    # (its own exit would end the worker anyway).
    deadline = time.monotonic() + 20
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    print("worker alive" if alive(pid) else "worker gone", flush=True)
"""


@pytest.mark.parametrize("loop", LOOPS)
def test_a_pool_never_exited_warns_and_kills_its_workers(tmp_path: Path, loop: str, start_method: str) -> None:
    script = tmp_path / "abandon.py"
    script.write_text(_ABANDON.replace("LOOP_ARGS", _loop_args(loop)))
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", str(script), start_method],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ResourceWarning: <aiomp.Pool processes=1 closed> was never exited; its workers are killed now" in (
        done.stderr
    ), done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("worker ") and second == "worker gone", done.stdout
    assert not _alive(int(first.split()[1]))


async def test_a_process_never_joined_warns(anyio_backend: Any) -> None:
    process = aiomp.Process(target=_work.sleep, args=(30,))
    await process.start()
    process.kill()
    pid = process.pid
    with pytest.warns(ResourceWarning, match="never joined or closed"):
        del process
        gc.collect()
    # As with multiprocessing, a later look at the children reaps it (once it has died of the kill).
    with anyio.fail_after(30):
        while pid in {p.pid for p in multiprocessing.active_children()}:
            await anyio.sleep(0.01)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).ppid() != os.getpid()
    gc.collect()


async def test_a_joined_process_does_not_warn(anyio_backend: Any) -> None:
    process = aiomp.Process(target=_work.inc, args=(1,))
    await process.start()
    await process.join()
    del process
    gc.collect()  # warnings are errors in this suite
