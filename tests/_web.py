"""examples/web_server.py run as a user runs it, in a subprocess, for tests/test_web_server.py.

``Server`` starts it on 127.0.0.1 on a port the kernel picks (``--port 0``), reads its
log from stderr in a thread (the port comes from uvicorn's "running on" line, which it
writes once the lifespan has started the pool), and lets a test wait for a log line.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "web_server.py"
START_TIMEOUT = 60.0  # a loaded 2-core machine: interpreter, starlette, uvicorn, a forkserver and 2 workers


class Server:
    """The example's server process (or ``command``'s), its log lines, and its process tree."""

    def __init__(self, *args: str, command: list[str] | None = None) -> None:
        env = dict(os.environ)
        env.pop("PYTHONUNBUFFERED", None)  # as a user runs it: the log handler must flush by itself
        self.proc = subprocess.Popen(
            command or [sys.executable, str(EXAMPLE), "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.lines: list[str] = []
        self._seen: dict[int, psutil.Process] = {}  # every process tree() found, for kill()
        self._eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="web-server-stderr", daemon=True)
        self._reader.start()
        try:
            found = self.wait_for(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", START_TIMEOUT)
        except BaseException:
            self.kill()
            raise
        self.url = f"http://127.0.0.1:{found[0].group(1)}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        # EOF comes once every process holding the pipe (the server, its forkserver and
        # workers, which inherit stderr) has exited.
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float, *, count: int = 1, since: int = 0) -> list[re.Match[str]]:
        """The first ``count`` log lines from line ``since`` on that match ``pattern``, waiting
        up to ``timeout`` seconds for them to be written."""
        regex = re.compile(pattern)

        def found() -> list[re.Match[str]]:
            matches = (regex.search(line) for line in self.lines[since:])
            return [m for m in matches if m is not None][:count]

        with self._changed:
            if not self._changed.wait_for(lambda: len(found()) >= count or self._eof, timeout):
                raise AssertionError(f"no {count} line(s) matching {pattern!r} within {timeout} s:\n{self.log()}")
            matches = found()
            if len(matches) < count:
                raise AssertionError(
                    f"the server's log ended without {count} line(s) matching {pattern!r}:\n{self.log()}"
                )
            return matches

    def tree(self) -> list[psutil.Process]:
        """The server process and every process under it (forkserver, workers, resource tracker)."""
        me = psutil.Process(self.proc.pid)
        tree = [me, *me.children(recursive=True)]
        self._seen.update((p.pid, p) for p in tree)
        return tree

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server, wait for it and its log to end; its exit code."""
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
            self._reader.join(timeout)
            assert not self._reader.is_alive(), f"a process still holds the server's stderr:\n{self.log()}"
        finally:
            self.kill()
        return code

    def kill(self) -> None:
        """Kill whatever is left of the tree and release the pipe (a test's clean-up)."""
        with contextlib.suppress(psutil.Error):
            self.tree()
        for process in self._seen.values():
            with contextlib.suppress(psutil.Error):
                process.kill()  # psutil checks that the pid was not reused
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
