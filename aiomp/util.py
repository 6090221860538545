"""``log_to_stderr`` and ``get_logger``, as in ``multiprocessing.util``.

With aiomp the records that workers log reach the parent anyway (see
``docs/logging.md``), so these are a convenience for code written after the
``multiprocessing`` tutorials: ``aiomp.log_to_stderr(logging.INFO)`` in the
parent, ``aiomp.get_logger().info(...)`` anywhere, and every line shows the
process it came from.
"""

from __future__ import annotations

import logging

__all__ = ["DEFAULT_LOGGING_FORMAT", "LOGGER_NAME", "get_logger", "log_to_stderr"]

LOGGER_NAME = "aiomp"
DEFAULT_LOGGING_FORMAT = "[%(levelname)s/%(processName)s] %(message)s"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``log_to_stderr`` adds (once)."""


def get_logger() -> logging.Logger:
    """Return the ``"aiomp"`` logger, the one aiomp itself logs to.

    Like ``multiprocessing.get_logger()``. In a worker its records go to the
    parent, like any other logger's.
    """
    return logging.getLogger(LOGGER_NAME)


def log_to_stderr(level: int | str | None = None) -> logging.Logger:
    """Print the ``"aiomp"`` logger's records on stderr, tagged with their process.

    Like ``multiprocessing.log_to_stderr``: adds a handler with the format
    ``[LEVEL/processName] message`` (only once, however often it is called),
    stops the logger's records from also reaching the root logger's handlers,
    and sets the logger's level if ``level`` is given (a number or a name such
    as ``"INFO"``). Workers started afterwards take that level on. Returns the
    logger.
    """
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, (int, str)):
            raise TypeError(f"level must be a logging level (int or name) or None, not {type(level).__name__}")
        if isinstance(level, int) and level < 0:
            raise ValueError(f"level must not be negative, not {level}")
        if isinstance(level, str) and not isinstance(logging.getLevelName(level), int):
            raise ValueError(f"level must be a known logging level name such as 'INFO', not {level!r}")
    logger = get_logger()
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(DEFAULT_LOGGING_FORMAT))
        logger.addHandler(handler)
        logger.propagate = False
    if level is not None:
        logger.setLevel(level)
    return logger


get_logger.__module__ = "aiomp"
log_to_stderr.__module__ = "aiomp"
