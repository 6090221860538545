"""Whatever happens to the parent, its workers do not outlive it; leaks are reported.

The parent-death and Ctrl-C tests run ``tests/_victim.py`` in its own session
(as a terminal would run a program), with two workers busy (one in a C call
that holds the GIL), then end it and watch the worker processes.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import time
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
        assert self.proc.stdout is not None
        try:
            # The pool starts within seconds; the suite's timeout covers a hang.
            while len(self.workers) < 2:
                line = self.proc.stdout.readline()
                if not line:
                    break
                kind, pid = line.split()
                assert kind == "worker", line
                self.workers.append(int(pid))
            assert len(self.workers) == 2, self.finish()[1]
        except BaseException:
            self.kill()
            raise
        time.sleep(0.2)  # both are inside their task now

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


def test_workers_die_with_a_parent_that_had_forked_another_child(start_method: str) -> None:
    victim = _Victim("asyncio", start_method, "fork")
    try:
        os.kill(victim.proc.pid, signal.SIGKILL)
        took = victim.wait_for_workers(5)
        assert not [pid for pid in victim.workers if _alive(pid)], f"workers outlived the parent by {took:.1f} s"
    finally:
        victim.kill()  # and the forked child, with the victim's process group


_DAEMON = """
import os, sys, time
import anyio, aiomp

def busy(_):
    os.write(1, f"child {os.getpid()}\\n".encode())
    sum(range(10**13))

async def main():
    kept = aiomp.Process(target=busy, args=(0,), daemon=True, context=sys.argv[1])
    await kept.start()
    dropped = aiomp.Process(target=busy, args=(1,), daemon=True, context=sys.argv[1])
    await dropped.start()
    del dropped  # (a ResourceWarning:) the child goes on until this process ends
    await anyio.sleep(3600)

if __name__ == "__main__":
    anyio.run(main)
"""


def test_daemon_process_children_die_with_their_parent(tmp_path: Path, start_method: str) -> None:
    script = tmp_path / "daemons.py"
    script.write_text(_DAEMON)
    proc = subprocess.Popen(
        [sys.executable, "-W", "ignore::ResourceWarning", str(script), start_method],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    children: list[int] = []
    try:
        assert proc.stdout is not None
        while len(children) < 2:
            line = proc.stdout.readline()
            assert line, "the script ended early"
            children.append(int(line.split()[1]))
        time.sleep(0.3)
        assert all(_alive(pid) for pid in children), "a dropped Process must not kill its child"
        os.kill(proc.pid, signal.SIGKILL)
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
    time.sleep(1.5)  # workers take a while to import the main module
import anyio, aiomp

async def main():
    async with aiomp.Pool(2, context=sys.argv[1]) as pool:
        await pool.apply(os.getpid)

if __name__ == "__main__":
    try:
        anyio.run(main)
    except KeyboardInterrupt:
        print("parent: KeyboardInterrupt", file=sys.stderr)
"""


def test_ctrl_c_while_workers_start_prints_nothing_from_them(tmp_path: Path, start_method: str) -> None:
    """SIGINT reaches workers still importing the main module (before they can ignore it)."""
    script = tmp_path / "slow_import.py"
    script.write_text(_SLOW_IMPORT)
    proc = subprocess.Popen(
        [sys.executable, str(script), start_method], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        time.sleep(0.8)  # the workers are importing now
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert err.strip() == "parent: KeyboardInterrupt", err


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
import asyncio, gc, os, sys, time
import aiomp

async def main():
    pool = aiomp.Pool(1, context=sys.argv[1])
    await pool.__aenter__()
    pid = await pool.apply(os.getpid)
    print(pid, flush=True)
    del pool
    gc.collect()
    await asyncio.sleep(0.5)  # its worker is killed at once

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_a_pool_never_exited_warns_and_kills_its_workers(tmp_path: Path, start_method: str) -> None:
    script = tmp_path / "abandon.py"
    script.write_text(_ABANDON)
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", str(script), start_method],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ResourceWarning" in done.stderr and "was never exited" in done.stderr, done.stderr
    pid = int(done.stdout.split()[0])
    assert not _alive(pid)


async def test_a_process_never_joined_warns(anyio_backend: Any) -> None:
    process = aiomp.Process(target=_work.sleep, args=(30,))
    await process.start()
    process.kill()
    pid = process.pid
    with pytest.warns(ResourceWarning, match="never joined or closed"):
        del process
        gc.collect()
    # As with multiprocessing, a later look at the children reaps it.
    deadline = time.monotonic() + 5
    while pid in {p.pid for p in multiprocessing.active_children()} and time.monotonic() < deadline:
        await anyio.sleep(0.01)
    gc.collect()


async def test_a_joined_process_does_not_warn(anyio_backend: Any) -> None:
    process = aiomp.Process(target=_work.inc, args=(1,))
    await process.start()
    await process.join()
    del process
    gc.collect()  # warnings are errors in this suite
