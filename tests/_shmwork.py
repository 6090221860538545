"""Child-process functions for tests/test_shm.py (importable by spawned children)."""

from __future__ import annotations

import os
import signal
from typing import Any

MiB = 1024 * 1024


def array(nbytes: int, seed: int = 0) -> Any:
    import numpy as np

    return np.random.default_rng(seed).random(nbytes // 8)


def echo_queue(inbox: Any, outbox: Any, count: int) -> None:
    """Send back what arrives, ``count`` times."""
    for _ in range(count):
        outbox.put(inbox.get(timeout=30))


def echo_pipe(conn: Any, count: int) -> None:
    for _ in range(count):
        conn.send(conn.recv())
    conn.close()


def send_array(conn: Any, nbytes: int) -> None:
    conn.send(array(nbytes, 1))
    conn.close()


def take_and_die(conn: Any, marker: str) -> None:
    """Receive a big array, say so, and die holding its mapping (no release runs)."""
    received = conn.recv()
    with open(marker + ".tmp", "w") as f:
        f.write(str(float(received[0])))
    os.replace(marker + ".tmp", marker)
    os.kill(os.getpid(), signal.SIGKILL)


def put_and_die(q: Any, nbytes: int) -> None:
    """Put a big array and exit at once, without waiting for the feeder (os._exit)."""
    q.put(array(nbytes, 2))
    q.close()
    q.join_thread()  # the message is in the pipe: its descriptor travels with it
    os._exit(3)


def memfds() -> set[int]:
    """This process's descriptors of aiomp's shared-memory segments."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if "aiomp-buffer" in os.readlink(f"/proc/self/fd/{name}"):
                found.add(int(name))
        except OSError:
            pass
    return found
