"""web: a Starlette app under uvicorn with CPU-bound requests; how fast its cheap endpoint answers.

The same server, in a subprocess of its own (``python -m benchmarks.workloads.web --serve ROW``),
does the work of ``/cpu`` (``_work.busy``, calibrated to about ``CPU_MS`` of CPU) one of three ways:

* **aiomp**: ``await pool.apply(busy, (n,))`` on one ``aiomp.Pool`` kept in the lifespan;
* **PPE**: ``await loop.run_in_executor(executor, busy, n)`` on one ``ProcessPoolExecutor``;
* **inline**: ``busy(n)`` on the event loop, the way not to do it;
* **idle**: the aiomp server again, with no ``/cpu`` load: the floor of the ``/health`` figures.

An async client (httpx, in this process) keeps ``IN_FLIGHT`` ``/cpu`` requests in flight while a
second client asks for ``/health`` every ``HEALTH_PERIOD`` s; the figures are that client's
latencies (p50, p99, max) and the ``/cpu`` requests completed per second. Both pools have
``--processes`` workers and use ``--start-method``; uvicorn runs on asyncio or uvloop, as
``--loop`` says (there is no trio uvicorn: the workload is skipped under trio). Access logging
is off. The rows take turns, in alternating order, ``rounds`` times; a fresh server per cell.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import psutil  # type: ignore[import-untyped, unused-ignore]

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, median, now, percentile, rows, skipped
from benchmarks._report import fmt_fixed, fmt_text
from benchmarks._types import Cell, Metric, Target, WorkloadResult

ROOT = Path(__file__).resolve().parent.parent.parent
LIBS = ["idle", "aiomp", "PPE", "inline"]
CPU_MS = 47.0  # the CPU a /cpu request costs, as the issue measured it
IN_FLIGHT = 8  # /cpu requests kept in flight
HEALTH_PERIOD = 0.010  # s between /health requests
WARMUP = 1.0  # s of load before the figures start
START_TIMEOUT = 60.0
TARGET = Target("< 20 ms and <= PPE's", lambda a, b: a < 20 and (b is None or a <= b))
METRICS = [
    Metric("p50_ms", "/health p50 ms", None, fmt_fixed(1)),
    Metric("p99_ms", "/health p99 ms", "lower", fmt_fixed(1), TARGET),
    Metric("max_ms", "/health max ms", None, fmt_fixed(1)),
    Metric("health_n", "/health answers", None, fmt_text),
    Metric("cpu_rps", "/cpu requests/s", "higher", fmt_fixed(1)),
]


def _seconds(cfg: Config) -> float:
    """How long the load runs per cell (after the warm-up)."""
    return 3.0 if cfg.quick else 10.0


# --- the server (run with --serve, in a subprocess) -----------------------------------------------


def _app(row: str, processes: int, start_method: str, iters: int) -> Any:
    import asyncio
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    import aiomp

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if row == "PPE":
            context = multiprocessing.get_context(start_method)
            with ProcessPoolExecutor(processes, mp_context=context) as executor:
                loop = asyncio.get_running_loop()
                await asyncio.gather(*(loop.run_in_executor(executor, _work.nap, 0.02) for _ in range(2 * processes)))

                async def in_executor() -> int:
                    return await loop.run_in_executor(executor, _work.busy, iters)

                yield {"work": in_executor}
        elif row == "inline":

            async def inline() -> int:
                return _work.busy(iters)

            yield {"work": inline}
        else:
            async with aiomp.Pool(processes, context=start_method) as pool:
                await pool.map(_work.nap, [0.02] * (2 * processes), chunksize=1)

                async def in_pool() -> int:
                    return await pool.apply(_work.busy, (iters,))

                yield {"work": in_pool}

    async def cpu(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(await request.state.work()))

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/cpu", cpu), Route("/health", health)], lifespan=lifespan)


def serve(argv: list[str]) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m benchmarks.workloads.web --serve")
    parser.add_argument("row", choices=LIBS)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--start-method", default="spawn")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--iters", type=int, required=True)
    args = parser.parse_args(argv)
    app = _app(args.row, args.processes, args.start_method, args.iters)
    uvicorn.run(app, host="127.0.0.1", port=0, loop=args.loop, access_log=False, timeout_graceful_shutdown=5)


# --- the client (this process) ---------------------------------------------------------------------


class _Server:
    """One server subprocess: started, its port read from its log, stopped with its whole tree."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self.url = ""
        self.ready = anyio.Event()

    async def read_log(self) -> None:
        assert self.process.stderr is not None
        buffered = ""
        async for chunk in self.process.stderr:
            buffered += chunk.decode(errors="replace")
            *lines, buffered = buffered.split("\n")
            for line in lines:
                self.log.append(line)
                found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
                if found:
                    self.url = found.group(1)
                    self.ready.set()
        self.ready.set()  # the server exited: url stays empty

    async def stop(self) -> list[str]:
        """SIGTERM, then the whole tree killed if it is not gone in 30 s; what had to be killed."""
        tree = []
        with contextlib.suppress(psutil.Error):
            tree = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(30):
            await self.process.wait()
        _, alive = await anyio.to_thread.run_sync(lambda: psutil.wait_procs(tree, timeout=10))
        left = [f"pid {p.pid}" for p in alive]
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        if self.process.returncode is None:
            left.append("the server")
            self.process.kill()
            await self.process.wait()
        return left


async def _load(url: str, seconds: float, with_cpu: bool) -> tuple[list[float], int]:
    """``/health`` latencies (s) while ``IN_FLIGHT`` ``/cpu`` requests run, and the /cpu completed."""
    import httpx

    latencies: list[float] = []
    completed = 0
    start = now() + WARMUP
    stop = start + seconds
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)

    async def cpu(client: httpx.AsyncClient) -> None:
        nonlocal completed
        while now() < stop:
            (await client.get("/cpu")).raise_for_status()
            completed += start <= now() < stop

    async def health(client: httpx.AsyncClient) -> None:
        due = now()
        while now() < stop:
            t0 = now()
            (await client.get("/health")).raise_for_status()
            if t0 >= start:
                latencies.append(now() - t0)
            due = max(due + HEALTH_PERIOD, now())  # a late answer shifts the schedule: no burst after it
            await anyio.sleep(max(0.0, due - now()))

    async with (
        httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as cpu_client,
        httpx.AsyncClient(base_url=url, timeout=120) as health_client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(IN_FLIGHT if with_cpu else 0):
            tg.start_soon(cpu, cpu_client)
        tg.start_soon(health, health_client)
    return latencies, completed


async def _measure(ctx: Ctx, iters: int) -> None:
    row, cfg, cell = ctx.runner.label, ctx.cfg, ctx.cell
    command = [sys.executable, "-m", "benchmarks.workloads.web", "--serve", row, "--loop", cfg.loop]
    command += ["--start-method", cfg.start_method, "--processes", str(cfg.processes), "--iters", str(iters)]
    process = await anyio.open_process(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=ROOT)
    server = _Server(process)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.read_log)
        try:
            with anyio.fail_after(START_TIMEOUT):
                await server.ready.wait()
            if not server.url:
                raise RuntimeError("the server exited before it served:\n" + "\n".join(server.log[-20:]))
            latencies, completed = await _load(server.url, _seconds(cfg), with_cpu=row != "idle")
        finally:
            with anyio.CancelScope(shield=True):
                left = await server.stop()
        if left:
            cell.notes.append(f"killed after the server's shutdown: {', '.join(left)}")
    cell.samples.setdefault("health_s", []).extend(latencies)
    cell.samples.setdefault("cpu_rps", []).append(completed / _seconds(cfg))


def _finish(row: Cell) -> None:
    latencies = row.samples.get("health_s", [])
    if latencies:
        row.values.update(
            p50_ms=percentile(latencies, 50) * 1e3,
            p99_ms=percentile(latencies, 99) * 1e3,
            max_ms=max(latencies) * 1e3,
            health_n=len(latencies),
        )
    if row.lib != "idle" and row.samples.get("cpu_rps"):
        row.values["cpu_rps"] = median(row.samples["cpu_rps"])


def run(cfg: Config) -> WorkloadResult:
    title = f"/health under {IN_FLIGHT} CPU requests in flight (uvicorn + Starlette)"
    missing = [m for m in ("starlette", "uvicorn", "httpx") if not _installed(m)]
    if cfg.loop == "trio":
        cells = skipped(LIBS, "uvicorn runs on asyncio and uvloop only: skipped on trio")
    elif missing:
        cells = skipped(LIBS, f"{', '.join(missing)} not installed: skipped")
    else:
        from benchmarks.workloads.cpu import calibrate

        iters = calibrate(CPU_MS / 1e3)

        async def measure(ctx: Ctx) -> None:
            await _measure(ctx, iters)

        cells = rows(cfg, LIBS, measure, "web", finish=_finish, timeout=_seconds(cfg) + START_TIMEOUT + 60)
    notes = [
        f"{IN_FLIGHT} /cpu requests (busy loop of about {CPU_MS:g} ms) kept in flight by one httpx client and "
        f"/health every {HEALTH_PERIOD * 1e3:g} ms from another, for {_seconds(cfg):g} s after {WARMUP:g} s of "
        f"warm-up; {cfg.rounds} round(s), latencies pooled; uvicorn on {cfg.loop}, a fresh server per cell; "
        "idle = the aiomp server without /cpu load (the floor); aiomp's workers run at its default niceness (5), "
        "the executor's at the parent's",
    ]
    return WorkloadResult("web", title, METRICS, cells, notes, reference="idle")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


WORKLOADS = {"web": run}


if __name__ == "__main__":  # one cell's server; the workload runs with: python -m benchmarks web
    if sys.argv[1:2] != ["--serve"]:
        raise SystemExit(
            "usage: python -m benchmarks.workloads.web --serve ROW ...; the workload: python -m benchmarks web"
        )
    serve(sys.argv[2:])
