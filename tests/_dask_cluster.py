"""Dask clusters for the tests of the Dask backend, outside the test process's tree.

A cluster here stands for a remote one: its processes are not the test's children.
Each is started through this module (``python -m tests._dask_cluster``), which
detaches at once (its own session, adopted by init) and then either runs a
``LocalCluster`` itself (``--workers N``) or supervises a command (the ``dask
scheduler`` and ``dask worker`` command lines). So the leak checks around every test
(children, descriptors, semaphores in ``/dev/shm``) do not count the cluster's own
processes, connections and semaphores, which come and go as workers are killed and
restarted, and the scheduler's connections are not in the test process at all.

The lifeline is the helper's standard input: when the tests close it, or die, the
helper stops what it runs, ends every process left in its session, and exits. The
tests wait for its standard output to close (every process holding it has exited),
bounded, and kill the session as a last resort.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
# Long enough for a cold start (imports, spawning the workers) on a busy 2-core machine.
START_SECONDS = 60.0
STOP_SECONDS = 20.0


def environment() -> dict[str, str]:
    """The environment of a cluster process: workers import the tests' helper modules."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    env.pop("AIOMP_TEST_INSTALLED", None)
    return env


class Cluster:
    """A LocalCluster started by ``local_cluster``: its address, and a look at its worker processes."""

    def __init__(self, address: str, session: int, workers: int) -> None:
        self.address = address
        self.session = session
        self.workers = workers

    def settled(self) -> bool:
        """Whether all its workers run, each for ``SETTLE_SECONDS`` at least.

        Tests end workers (to stop a task, or to lose one) and their nannies start new
        ones: the next test starts with the whole cluster, its workers past their start.
        """
        ages = [age for age, command in self.processes() if "spawn_main" in command]
        return len(ages) == self.workers and min(ages) >= SETTLE_SECONDS

    def processes(self) -> list[tuple[float, str]]:
        """The age and command line of every process of the cluster (for ``settled``, and to report)."""
        now = time.time()
        found = []
        for process in psutil.process_iter(["cmdline", "create_time"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(process.pid) == self.session:
                    found.append((now - process.info["create_time"], " ".join(process.info["cmdline"] or ())))
        return found


# How long a worker process must have run before a test may end it (see Cluster.settled).
SETTLE_SECONDS = 1.0


@contextlib.contextmanager
def local_cluster(folder: Path, workers: int = 2, allowed_failures: int = 1) -> Iterator[Cluster]:
    """A LocalCluster of ``workers`` single-threaded worker processes."""
    arguments = [f"--workers={workers}", f"--allowed-failures={allowed_failures}"]
    with _detached(arguments, folder / "local-cluster.log") as (session, words):
        yield Cluster(words[0], session, workers)


@contextlib.contextmanager
def cli_cluster(folder: Path, tls: dict[str, Path] | None = None, nthreads: int = 1) -> Iterator[str]:
    """``dask scheduler`` and one ``dask worker`` (with a nanny); yields the scheduler's address.

    With ``tls`` (``{"ca": ..., "cert": ..., "key": ...}``, PEM files) both speak TLS
    and require it of every peer.
    """
    scheduler_file = folder / "scheduler.json"
    command = ["-m", "distributed.cli.dask_scheduler", *_options(tls), "--port", "0"]
    command += ["--no-dashboard", "--scheduler-file", str(scheduler_file)]
    if tls is not None:
        command += ["--protocol", "tls"]
    with _detached(["--", sys.executable, *command], folder / "scheduler.log"):
        address = _address_from(scheduler_file, folder / "scheduler.log")
        with cli_worker(folder, address, tls, nthreads):
            yield address


@contextlib.contextmanager
def cli_worker(folder: Path, address: str, tls: dict[str, Path] | None = None, nthreads: int = 1) -> Iterator[None]:
    """One ``dask worker`` (with a nanny) of ``nthreads`` threads, joined to the scheduler at ``address``."""
    command = ["-m", "distributed.cli.dask_worker", address, *_options(tls)]
    command += ["--nthreads", str(nthreads), "--nworkers", "1", "--no-dashboard", "--death-timeout", "60"]
    with _detached(["--", sys.executable, *command], folder / f"worker-{time.monotonic_ns()}.log"):
        yield


def _options(tls: dict[str, Path] | None) -> list[str]:
    options = ["--host", "127.0.0.1"]
    if tls is not None:
        options += ["--tls-ca-file", str(tls["ca"]), "--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"])]
    return options


@contextlib.contextmanager
def _detached(arguments: list[str], log: Path) -> Iterator[tuple[int, list[str]]]:
    """Run this module detached with ``arguments``; yield its session and the other words of its first line."""
    with open(log, "wb") as err:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "tests._dask_cluster", *arguments],
            cwd=ROOT,
            env=environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert launcher.stdin is not None and launcher.stdout is not None
    launcher.wait(START_SECONDS)  # it detaches at once; its detached copy goes on
    session: int | None = None
    try:
        ready, _, _ = select.select([launcher.stdout], [], [], START_SECONDS)
        words = launcher.stdout.readline().decode().split() if ready else []
        if not words:
            raise RuntimeError(f"{arguments} did not start: {_tail(log)}")
        session = int(words[0])
        yield session, words[1:]
    finally:
        launcher.stdin.close()  # the lifeline: the helper stops everything it runs
        if not _closed(launcher.stdout.fileno(), STOP_SECONDS) and session is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(session, signal.SIGKILL)
            _closed(launcher.stdout.fileno(), STOP_SECONDS)
        launcher.stdout.close()


def _closed(fd: int, seconds: float) -> bool:
    """Read ``fd`` to its end (every writer gone), for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready and not os.read(fd, 4096):
            return True
    return False


def _address_from(scheduler_file: Path, log: Path) -> str:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            return str(json.loads(scheduler_file.read_text())["address"])
        time.sleep(0.05)
    raise RuntimeError(f"the scheduler did not start: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError as error:
        return repr(error)


# -- the helper's side -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--allowed-failures", type=int, default=1)
    parser.add_argument("command", nargs="*", help="a command to supervise instead of a LocalCluster")
    args = parser.parse_args()
    if os.fork():  # detach: the launcher exits, this copy is adopted by init
        os._exit(0)
    os.setsid()
    try:
        if args.command:
            _supervise(args.command)
        else:
            _local_cluster(args.workers, args.allowed_failures)
    finally:
        _end_session()


def _supervise(command: list[str]) -> None:
    # Its output goes to the log (our stderr), so that only this process holds the lifeline's pipes.
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sys.stderr)
    print(os.getpgid(0), flush=True)
    sys.stdin.read()  # until the tests close their end, or die
    child.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(STOP_SECONDS / 2)


def _local_cluster(workers: int, allowed_failures: int) -> None:
    import dask
    from distributed import LocalCluster

    settings = {
        # A task whose worker dies is retried this many times (Dask's default is 3): a
        # dead worker turns into WorkerDiedError sooner, and the retry is still exercised.
        "distributed.scheduler.allowed-failures": allowed_failures,
        # 15 s after a worker leaves, a LocalCluster closes its nanny for good if no worker
        # of that name is back at that moment: with workers ended and restarted every few
        # seconds, one restarting then would cost the cluster a worker for good.
        "distributed.deploy.lost-worker-timeout": "1h",
    }
    with (
        dask.config.set(settings),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address=":0",
        ) as cluster,
    ):
        print(os.getpgid(0), cluster.scheduler_address, flush=True)
        sys.stdin.read()  # until the tests close their end, or die


def _end_session() -> None:
    """Stop whatever is left in this session (workers whose nanny did not stop them), then this process."""
    group = os.getpgid(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    time.sleep(0.5)
    sys.stdout.flush()
    os.killpg(group, signal.SIGKILL)


if __name__ == "__main__":
    main()
