"""Big buffers through shared memory (``aiomp._shm``): zero copy on receipt, reuse, release,
and nothing left behind after faults.

The per-test leak check (conftest) already proves that no descriptor, /dev/shm entry or
resource-tracker registration outlives a test; these tests add what it cannot see.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import aiomp
from aiomp import _serialize, _shm

from . import _shmwork

np = pytest.importorskip("numpy")

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
BIG = 4 * MiB  # above the threshold


def _mapped(arr: Any) -> bool:
    """Whether a NumPy array lies in a received shared-memory segment."""
    base = arr
    while getattr(base, "base", None) is not None:
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, _shm._Mapping)


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Objects with close() to close after the test (before the leak check)."""
    made: list[Any] = []
    yield made
    for item in made:
        item.close()
    made.clear()


def test_threshold_is_where_documented() -> None:
    assert _shm.THRESHOLD == 1 << 20
    small = _serialize.encode(np.zeros((_shm.THRESHOLD - 1) // 8, dtype=np.uint8).view(np.uint8))
    assert small.big_bytes() == 0
    big = _serialize.encode(np.zeros(_shm.THRESHOLD, dtype=np.uint8))
    assert big.big_bytes() == _shm.THRESHOLD


def test_codec_round_trip_in_one_process() -> None:
    """Every kind of buffer API.md names, packed, passed and rebuilt: values and types kept."""
    arr = _shmwork.array(BIG)
    obj = {
        "array": arr,
        "bytes": b"b" * BIG,
        "bytearray": bytearray(b"a" * BIG),
        "memoryview": memoryview(b"m" * BIG),
        "small": np.arange(10),
        "plain": [1, "two", None],
    }
    frame = _serialize.pack([_serialize.encode(obj)])
    assert len(frame.fds) == 1  # one segment for the object's big buffers
    received = _serialize.Frame(list(frame.parts), [os.dup(fd) for fd in frame.fds])
    for placed in frame.keep:  # type: ignore[union-attr]
        placed.sent = True
    del frame
    back = _serialize.decode(received)
    assert np.array_equal(back["array"], arr) and _mapped(back["array"])
    assert back["array"].flags.writeable
    assert type(back["bytes"]) is bytes and back["bytes"] == obj["bytes"]
    assert type(back["bytearray"]) is bytearray and back["bytearray"] == obj["bytearray"]
    assert type(back["memoryview"]) is memoryview and back["memoryview"].tobytes() == b"m" * BIG
    assert np.array_equal(back["small"], np.arange(10)) and not _mapped(back["small"])
    assert back["plain"] == [1, "two", None]
    del back, received
    assert _shm.settle(10)


async def test_array_through_pipe_is_backed_by_the_segment(start_method: str, closing: list[Any]) -> None:
    a, b = aiomp.Pipe()
    closing += [a, b]
    with anyio.fail_after(30):
        async with aiomp.Process(target=_shmwork.send_array, args=(b, BIG), context=start_method):
            b.close()
            got = await a.arecv()
    assert _mapped(got) and np.array_equal(got, _shmwork.array(BIG, 1))
    got[0] = -1.0  # the receiver owns it: writable
    del got


async def test_echo_through_queues_reuses_segments(start_method: str, closing: list[Any]) -> None:
    """Ping-pong of big arrays: the sender's cache settles on a couple of segments, not one
    new segment per message (fresh pages cost several times a copy into warm ones)."""
    inbox, outbox = aiomp.Queue(), aiomp.Queue()
    closing += [inbox, outbox]
    rounds = 8
    arr = _shmwork.array(BIG)
    with anyio.fail_after(60):
        async with aiomp.Process(target=_shmwork.echo_queue, args=(inbox, outbox, rounds), context=start_method):
            for i in range(rounds):
                arr[0] = i
                await inbox.aput(arr)
                back = await outbox.aget()
                assert back[0] == i and _mapped(back)
                del back
    mine = [s for s in _shm._cache.segments]
    assert len(mine) <= 3, f"{len(mine)} segments for {rounds} messages of one size"


async def test_memory_is_released_when_the_object_is_collected(closing: list[Any]) -> None:
    a, b = aiomp.Pipe()
    closing += [a, b]
    with anyio.fail_after(30):
        async with aiomp.Process(target=_shmwork.send_array, args=(b, BIG)):
            b.close()
            got = await a.arecv()
    held = _shmwork.memfds()
    assert held, "the received array's segment should be open while the array lives"
    del got
    assert await anyio.to_thread.run_sync(_shm.settle, 10.0)
    assert not (_shmwork.memfds() & held) - {s.fd for s in _shm._cache.segments}


async def test_a_receiver_killed_mid_transfer_leaves_nothing(
    tmp_path: pathlib.Path, start_method: str, closing: list[Any]
) -> None:
    """The child dies holding the mapping of what it received: the parent's segment is never
    marked free, so the cache forgets it in time; nothing is named, so nothing is left."""
    a, b = aiomp.Pipe()
    closing += [a, b]
    marker = str(tmp_path / "got")
    with anyio.fail_after(30):
        p = aiomp.Process(target=_shmwork.take_and_die, args=(b, marker), context=start_method)
        await p.start()
        b.close()
        await a.asend(_shmwork.array(BIG))
        await p.join()
    assert p.exitcode == -signal.SIGKILL
    assert os.path.exists(marker)
    assert any(s.busy() for s in _shm._cache.segments)  # never released by the dead child
    _shm.forget_cache(busy_too=True)
    assert await anyio.to_thread.run_sync(_shm.settle, 10.0)
    assert not _shmwork.memfds()


async def test_a_sender_that_exits_right_after_put_loses_nothing(start_method: str, closing: list[Any]) -> None:
    """The descriptor travels with the message: the item outlives its sender."""
    q = aiomp.Queue()
    closing.append(q)
    with anyio.fail_after(30):
        async with aiomp.Process(target=_shmwork.put_and_die, args=(q, BIG), context=start_method) as p:
            got = await q.aget()
        assert p.exitcode == 3
    assert _mapped(got) and np.array_equal(got, _shmwork.array(BIG, 2))


async def test_cancelled_aget_of_a_big_item_loses_nothing(closing: list[Any]) -> None:
    """Cancel aget again and again while a big item arrives: the item is never lost."""
    q = aiomp.Queue()
    closing.append(q)
    arr = _shmwork.array(BIG)
    with anyio.fail_after(30):
        await q.aput(arr)
        for delay in (0, 0, 0.0001, 0.0005, 0.001):
            with anyio.move_on_after(delay):
                got = await q.aget()
                break
        else:
            got = await q.aget()
    assert np.array_equal(got, arr)
    assert q.empty()


async def test_cancelled_arecv_of_a_big_object_loses_nothing(closing: list[Any]) -> None:
    a, b = aiomp.Pipe()
    closing += [a, b]
    arr = _shmwork.array(BIG)
    with anyio.fail_after(30):
        await b.asend(arr)
        got = None
        for delay in (0, 0.0001, 0.0005):
            with anyio.move_on_after(delay):
                got = await a.arecv()
        if got is None:
            got = await a.arecv()
    assert np.array_equal(got, arr)
    assert not a.poll(0)


def test_a_killed_parent_leaves_nothing(tmp_path: pathlib.Path, start_method: str) -> None:
    """SIGKILL a program in the middle of moving big arrays to and from its child: the child
    dies with it (its lifeline), and nothing is left in /dev/shm."""
    script = tmp_path / "victim.py"
    ready = tmp_path / "ready"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, anyio, aiomp, numpy as np
            from tests import _shmwork

            async def main():
                inbox, outbox = aiomp.Queue(), aiomp.Queue()
                p = aiomp.Process(target=_shmwork.echo_queue, args=(inbox, outbox, 10**6), daemon=True,
                                  context={start_method!r})
                await p.start()
                arr = _shmwork.array({BIG})
                await inbox.aput(arr)
                await outbox.aget()
                with open({str(ready)!r}, "w") as f:
                    f.write(str(p.pid))
                while True:
                    await inbox.aput(arr)
                    await outbox.aget()

            if __name__ == "__main__":
                anyio.run(main)
            """
        )
    )
    before = set(os.listdir("/dev/shm"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pathlib.Path(__file__).parent.parent), *sys.path])}
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        _wait(lambda: ready.exists() and ready.read_text().isdigit(), 60)
        child = int(ready.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        _wait(lambda: not _alive(child), 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert not {name for name in set(os.listdir("/dev/shm")) - before if "aiomp" in name or "psm_" in name}


def _wait(condition: Any, timeout: float) -> None:
    """Wait for another process's observable state (a file, /proc), bounded."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
