"""Functions the tests of the Dask backend run on Dask workers (importable there)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path


def busy(gate: str, seconds: float) -> str:
    """Plain blocking work that no signal to the thread can stop: mark the start, sleep, mark the end."""
    base = Path(gate)
    with open(base.with_suffix(".started"), "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    with open(base.with_suffix(".finished"), "a") as f:
        f.write(f"{os.getpid()}\n")
    return gate


def log_some(name: str) -> int:
    """Log at every level on logger ``name``, and an exception; return this process's id."""
    logger = logging.getLogger(name)
    logger.debug("debug from %s", "a worker")
    logger.info("info from %s", "a worker", extra={"request": "r-42"})
    logger.warning("warning %d", 3)
    try:
        raise KeyError("inside")
    except KeyError:
        logger.exception("failed")
    return os.getpid()


def big(size: int) -> bytes:
    return b"y" * size
