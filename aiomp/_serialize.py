"""Pickling for everything that crosses into or out of a worker.

Protocol 5 with out-of-band buffers, so a NumPy array or bytearray is handed to
the socket as it lies in memory instead of being copied into the pickle.
cloudpickle is the fallback for what plain pickle cannot name: lambdas, closures,
and functions defined in ``__main__`` (which a worker may not be able to import,
say under ``python -c`` or when defined below the ``__main__`` guard).

This module is the seam for other transports (shared memory, later): every
payload is made by ``dumps`` and read back by ``loads``.
"""

from __future__ import annotations

import linecache
import pickle
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["dump_error", "dump_function", "dump_inband", "dumps", "likely_large", "load_error", "loads"]

_PROTOCOL = 5
# Payloads above this many bytes are pickled and unpickled off the event loop.
LARGE = 1 << 20


def dumps(obj: object, buffers: list[pickle.PickleBuffer]) -> bytes:
    """Pickle ``obj``, appending its out-of-band buffers to ``buffers``."""
    mark = len(buffers)
    try:
        return pickle.dumps(obj, _PROTOCOL, buffer_callback=buffers.append)
    except Exception as error:
        del buffers[mark:]
        import cloudpickle  # only for what plain pickle cannot do (saves workers an import)

        try:
            data: bytes = cloudpickle.dumps(obj, _PROTOCOL, buffer_callback=buffers.append)
            return data
        except Exception:
            del buffers[mark:]
            raise error from None


def dump_inband(obj: object) -> bytes:
    """Pickle ``obj`` with its buffers inside the pickle, for payloads sent once.

    Raises what the standard library raises for objects that may only be pickled
    while a process starts (queues, locks): ``RuntimeError``.
    """
    return dumps(obj, _Refuse())


class _Refuse(list):  # type: ignore[type-arg]
    """A buffer list that keeps every buffer in band."""

    def append(self, buffer: object) -> bool:  # type: ignore[override]
        return True  # a true result tells pickle to serialize the buffer in band


def loads(data: bytes, buffers: Sequence[object] = ()) -> Any:
    """Unpickle what ``dumps`` made."""
    return pickle.loads(data, buffers=buffers)


_function_cache: dict[Callable[..., Any], bytes] = {}
_FUNCTION_CACHE_SIZE = 64


def dump_function(func: Callable[..., Any]) -> bytes:
    """Pickle a function, by reference where a worker can import it, else by value.

    Recently used functions are remembered, so a hot loop of ``apply`` pickles
    its function once; cloudpickle by value costs tens of microseconds.
    """
    try:
        return _function_cache[func]
    except (KeyError, TypeError):
        pass
    if getattr(func, "__module__", None) == "__main__" and not _top_level_of_main_script(func):
        import cloudpickle

        data: bytes = cloudpickle.dumps(func, _PROTOCOL)
    else:
        data = dumps(func, [])
    try:
        if len(_function_cache) >= _FUNCTION_CACHE_SIZE:
            del _function_cache[next(iter(_function_cache))]
        _function_cache[func] = data
    except TypeError:  # unhashable callable
        pass
    return data


def _top_level_of_main_script(func: Callable[..., Any]) -> bool:
    """Whether a worker, which re-imports the main script, finds ``func`` there by name.

    True for a function defined at the top level of a script file, so it goes by
    reference and shares the module's globals with its neighbours (a pool
    initializer setting a global that the task function reads). Functions defined
    under the ``__main__`` guard, in ``python -c``, interactively, or in a package's
    ``__main__`` run with ``python -m`` go by value.
    """
    main = sys.modules.get("__main__")
    code = getattr(func, "__code__", None)
    name = getattr(func, "__name__", None)
    if code is None or name is None or getattr(func, "__qualname__", None) != name:
        return False
    if getattr(main, "__file__", None) != code.co_filename or getattr(main, name, None) is not func:
        return False
    spec = getattr(main, "__spec__", None)
    if spec is not None and (spec.name == "__main__" or spec.name.endswith(".__main__")):
        return False  # python -m package: multiprocessing does not re-import a package's __main__
    line = linecache.getline(code.co_filename, code.co_firstlineno)
    return line.startswith(("def ", "async def ", "@"))


_SCALARS = frozenset({int, float, bool, complex, type(None)})
_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})


def likely_large(obj: object, depth: int = 2) -> bool:
    """A cheap guess whether pickling ``obj`` would take long enough to stall a loop.

    Looks at sizes, not contents: big ``bytes``/``str`` and big containers, a
    couple of levels deep. Out-of-band buffers (NumPy arrays, bytearrays) cost
    nothing to pickle, so they do not count. This runs on every call: keep it to
    a few type checks for the usual small arguments.
    """
    kind = type(obj)
    if kind in _SCALARS:
        return False
    if kind is bytes or kind is str:
        return len(obj) >= LARGE  # type: ignore[arg-type]
    if kind in _CONTAINERS:
        size = len(obj)  # type: ignore[arg-type]
        if size >= 50_000:
            return True
        if depth and size <= 64:
            items: Iterable[object] = obj.values() if isinstance(obj, dict) else obj  # type: ignore[assignment]
            for item in items:
                if type(item) not in _SCALARS and likely_large(item, depth - 1):
                    return True
    return False


def dump_error(error: BaseException) -> bytes:
    """Pickle an exception raised by a task together with its traceback text.

    An exception that cannot make the round trip (unpicklable attributes, an
    ``__init__`` that unpickling cannot call) is replaced by a ``ProcessError``
    that names it and keeps its message.
    """
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    tb = f'\n"""\n{tb}"""'
    try:
        data = dumps((error, tb), [])
        pickle.loads(data)
    except Exception as problem:
        from ._exceptions import ProcessError

        substitute = ProcessError(
            f"the task raised {type(error).__module__}.{type(error).__qualname__}: {error}"
            f" (the exception could not be sent to the parent: {problem!r})"
        )
        data = pickle.dumps((substitute, tb), _PROTOCOL)
    return data


def load_error(data: bytes) -> BaseException:
    """Rebuild a task's exception, the worker's traceback set as its ``__cause__``."""
    from ._exceptions import RemoteTraceback

    error, tb = pickle.loads(data)
    error.__cause__ = RemoteTraceback(tb)
    return error  # type: ignore[no-any-return]
