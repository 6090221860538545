"""The one codec: how objects become frames (``_frames``) and back, for every channel.

Pickling: protocol 5 with out-of-band buffers, so a NumPy array or a bytearray
is never copied into the pickle. Plain ``pickle`` first (the fastest); then the
``multiprocessing`` reductions (``ForkingPickler``: sockets, the standard
library's connections, and ``memoryview`` and big ``bytes`` as out-of-band
buffers); then cloudpickle with those reductions, for what plain pickle cannot
name: lambdas, closures, and functions defined in ``__main__`` (which a worker
may not be able to import, say under ``python -c``).

Packing: a frame carries one or more encoded objects. A frame of a single
object without buffers is just its pickle, one part (so ``recv_bytes`` of a
``send`` is the pickle, as in the standard library). Otherwise part 0 is a
layout table and the others follow it::

    layout: !I objects, then per object !I buffers, then per buffer
            !iQQ (segment descriptor index, or -1 for the next part; offset; size)
    parts:  per object its pickle, then its buffers that travel in band

Buffers of ``_shm.THRESHOLD`` bytes or more travel in a shared-memory segment,
one per object, whose descriptor rides with the frame; smaller ones are parts.
A pickle is never put inside another pickle.
"""

from __future__ import annotations

import collections
import copyreg
import io
import pickle
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from multiprocessing import reduction

from . import _shm
from ._frames import Buffer, Frame

TYPE_CHECKING = False  # a worker does not import typing (start-up time)
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = [
    "Encoded",
    "Packed",
    "dump_error",
    "dump_function",
    "dump_inband",
    "dumps",
    "encode",
    "likely_large",
    "load_error",
    "loads",
    "pack",
    "unpack",
]

_PROTOCOL = 5
# Payloads above this many bytes are pickled and unpickled off the event loop.
LARGE = 1 << 20


def dumps(obj: object, buffers: list[pickle.PickleBuffer]) -> bytes:
    """Pickle ``obj``, appending its out-of-band buffers to ``buffers``.

    Raises what the first pickler raised if none of them can pickle it.
    """
    mark = len(buffers)
    first: Exception | None = None
    try:
        data = pickle.dumps(obj, _PROTOCOL, buffer_callback=buffers.append)
        # A big pickle may hold a big bytes, which pickle keeps in band (no hook for
        # bytes): look, and if so pickle again with it out of band, for shared memory.
        if len(data) < _shm.THRESHOLD or not _holds_big_bytes(obj, 2):
            return data
        del buffers[mark:]
        obj = _swap_big_bytes(obj, 2)
    except Exception as error:
        del buffers[mark:]
        # Without its traceback: that would keep this frame, and so the object and its
        # buffers, in a reference cycle (memoryviews in cycles can crash the collector).
        first = error.with_traceback(None)
    try:
        out = io.BytesIO()
        _Pickler(out, _PROTOCOL, buffer_callback=buffers.append).dump(obj)
        return out.getvalue()
    except Exception as error:
        del buffers[mark:]
        first = first or error.with_traceback(None)
    if isinstance(first, RuntimeError):  # may only be pickled while a process starts
        raise first
    out = io.BytesIO()
    sink = _Sink(buffers)
    pickler = _cloud_pickler()(out, _PROTOCOL, buffer_callback=sink)
    try:
        pickler.dump(obj)
        return out.getvalue()
    except Exception:
        del buffers[mark:]
        raise first from None
    finally:
        # cloudpickle's pickler is in a reference cycle (through its reducer_override),
        # which would keep what it pickled alive until the collector runs: let go now.
        pickler.clear_memo()
        sink.target = None


class _Sink:
    """A buffer callback that can be cut off from its list."""

    __slots__ = ("target",)

    def __init__(self, target: list[pickle.PickleBuffer]) -> None:
        self.target: list[pickle.PickleBuffer] | None = target

    def __call__(self, buffer: pickle.PickleBuffer) -> Any:
        assert self.target is not None
        return self.target.append(buffer)  # _Refuse says True: keep it in band


class _BigBytes:
    """Stands for a big ``bytes`` while pickling (picklers give ``bytes`` no hook)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _reduce_memoryview(obj: memoryview) -> Any:
    return _rebuild_memoryview, (pickle.PickleBuffer(obj),)


def _reduce_big_bytes(obj: _BigBytes) -> Any:
    return _rebuild_bytes, (pickle.PickleBuffer(obj.data),)


def _rebuild_memoryview(buffer: Any) -> memoryview:
    return memoryview(buffer)


def _rebuild_bytes(buffer: Any) -> bytes:
    return _shm.copy_out(buffer)


_BUFFER_REDUCERS: dict[type, Callable[[Any], Any]] = {memoryview: _reduce_memoryview, _BigBytes: _reduce_big_bytes}


class _Pickler(pickle.Pickler):
    """``ForkingPickler``'s reductions, plus memoryviews and big bytes out of band.

    A table, not ``reducer_override``: that would put each pickler in a reference
    cycle, which keeps the objects it pickled alive until the collector runs.
    """

    dispatch_table = collections.ChainMap(  # noqa: RUF012 - read-only, shared by every pickler
        _BUFFER_REDUCERS,
        reduction.ForkingPickler._extra_reducers,  # type: ignore[attr-defined]
        copyreg.dispatch_table,  # type: ignore[arg-type]
    )


_cloud: Any = None


def _cloud_pickler() -> Any:
    """cloudpickle's pickler with the same reductions (imported on first use)."""
    global _cloud
    if _cloud is None:
        import cloudpickle

        class CloudPickler(cloudpickle.Pickler):  # type: ignore[misc]
            dispatch_table: ClassVar[Any] = collections.ChainMap(
                _BUFFER_REDUCERS,
                reduction.ForkingPickler._extra_reducers,  # type: ignore[attr-defined]
                cloudpickle.Pickler.dispatch_table,
            )

        _cloud = CloudPickler
    return _cloud


def _swap_big_bytes(obj: Any, depth: int) -> Any:
    """``obj`` with its big ``bytes`` (a couple of levels deep) wrapped in ``_BigBytes``."""
    kind = type(obj)
    if kind is bytes:
        return _BigBytes(obj) if len(obj) >= _shm.THRESHOLD else obj
    if not depth or kind not in _CONTAINERS or len(obj) > 64:
        return obj
    if kind is dict:
        return {key: _swap_big_bytes(value, depth - 1) for key, value in obj.items()}
    return kind(_swap_big_bytes(item, depth - 1) for item in obj)


def _holds_big_bytes(obj: object, depth: int) -> bool:
    """A cheap look whether ``obj`` holds a ``bytes`` big enough for shared memory."""
    kind = type(obj)
    if kind is bytes:
        return len(obj) >= _shm.THRESHOLD  # type: ignore[arg-type]
    if kind in _SCALARS:
        return False
    if depth and kind in _CONTAINERS and len(obj) <= 64:  # type: ignore[arg-type]
        items: Iterable[object] = obj.values() if isinstance(obj, dict) else obj  # type: ignore[assignment]
        return any(type(item) not in _SCALARS and _holds_big_bytes(item, depth - 1) for item in items)
    return False


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


def loads(data: Buffer, buffers: Sequence[object] = ()) -> Any:
    """Unpickle what ``dumps`` made."""
    return pickle.loads(data, buffers=buffers)


# -- packing objects into frames ------------------------------------------------

_COUNT = struct.Struct("!I")
_WHERE = struct.Struct("!iQQ")
_INLINE = -1


_NO_VIEWS: list[memoryview] = []
_NO_ORDER: list[bool] = []


class Encoded:
    """An object pickled, its big buffers maybe already copied into shared memory."""

    __slots__ = ("big", "inline", "order", "pickle", "placed")

    def __init__(self, data: bytes, buffers: list[pickle.PickleBuffer]) -> None:
        self.pickle = data
        self.placed: _shm.Placed | None = None
        if not buffers:  # the usual case: share empty lists, never changed in place
            self.inline = self.big = _NO_VIEWS
            self.order = _NO_ORDER
            return
        self.inline = []
        self.big = []
        self.order = []  # per buffer, in pickling order: True if big
        for buffer in buffers:
            view = buffer.raw()
            big = view.nbytes >= _shm.THRESHOLD
            (self.big if big else self.inline).append(view)
            self.order.append(big)

    def big_bytes(self) -> int:
        """Bytes still to copy into shared memory (``place``)."""
        return 0 if self.placed is not None else sum(view.nbytes for view in self.big)

    def has_segment(self) -> bool:
        """Whether the object's big buffers travel in a shared-memory segment."""
        return self.placed is not None or bool(self.big)

    def place(self) -> None:
        """Copy the big buffers into a shared-memory segment (may run in any thread)."""
        if self.big and self.placed is None:
            self.placed = _shm.place(self.big)
            self.big = []


def encode(obj: object) -> Encoded:
    """Pickle ``obj`` for ``pack`` (its big buffers are copied there, or by ``place``)."""
    buffers: list[pickle.PickleBuffer] = []
    data = dumps(obj, buffers)
    return Encoded(data, buffers)


def frame_of(obj: object) -> Frame:
    """A frame carrying ``obj`` alone (``pack([encode(obj)])``, quicker for the usual small objects)."""
    buffers: list[pickle.PickleBuffer] = []
    data = dumps(obj, buffers)
    if not buffers:
        return Frame([data])
    return pack([Encoded(data, buffers)])


def pack(objects: Sequence[Encoded]) -> Frame:
    """One frame carrying ``objects``, in order."""
    if not any(item.order for item in objects):  # no buffers: the usual case
        if len(objects) == 1:
            return Frame([objects[0].pickle])
        return Frame([_plain_layout(len(objects)), *(item.pickle for item in objects)])
    layout = [_COUNT.pack(len(objects))]
    parts: list[Buffer] = [b""]
    fds: list[int] = []
    keep: list[_shm.Placed] = []
    for item in objects:
        item.place()
        layout.append(_COUNT.pack(len(item.order)))
        parts.append(item.pickle)
        placed = item.placed
        where = iter(placed.layout) if placed is not None else iter(())
        for big in item.order:
            if big:
                assert placed is not None
                offset, size = next(where)
                layout.append(_WHERE.pack(len(fds), offset, size))
            else:
                layout.append(_WHERE.pack(_INLINE, 0, 0))
        parts.extend(item.inline)
        if placed is not None:
            fds.append(placed.fd)
            keep.append(placed)
    parts[0] = b"".join(layout)
    return Frame(parts, fds, keep or None)


class Packed:
    """One object of a received frame, not unpickled yet (``load``)."""

    __slots__ = ("buffers", "pickle", "segment", "where")

    def __init__(self, data: Buffer, buffers: list[Buffer], segment: _shm.Received | None, where: list[Any]) -> None:
        self.pickle = data
        self.buffers = buffers  # in band, in order
        self.segment = segment  # owns the descriptor until load() maps it
        self.where = where  # per buffer: None (in band) or (offset, size)

    def load(self) -> Any:
        """Unpickle the object; its big buffers are views of the shared segment."""
        buffers: list[Buffer] = []
        if self.segment is not None:
            views = iter(self.segment.views([w for w in self.where if w is not None]))
            self.segment = None
            inline = iter(self.buffers)
            buffers = [next(inline) if w is None else next(views) for w in self.where]
        else:
            buffers = self.buffers
        return pickle.loads(self.pickle, buffers=buffers)

    def nbytes(self) -> int:
        """The size of the pickle (what unpickling must walk through)."""
        return len(self.pickle)


_PLAIN: dict[int, bytes] = {}
_NO_PARTS: list[Any] = []  # shared, never changed in place


def _plain_layout(count: int) -> bytes:
    """The layout of ``count`` objects without buffers."""
    layout = _PLAIN.get(count)
    if layout is None:
        layout = _PLAIN[count] = _COUNT.pack(count) + _COUNT.pack(0) * count
    return layout


def unpack(frame: Frame) -> list[Packed]:
    """The objects of a received frame; it hands its descriptors over to them."""
    parts = frame.parts
    if len(parts) == 1:
        return [Packed(parts[0], _NO_PARTS, None, _NO_PARTS)]
    if not frame.fds and parts[0] == _plain_layout(len(parts) - 1):
        return [Packed(part, _NO_PARTS, None, _NO_PARTS) for part in parts[1:]]
    fds, frame.fds = frame.fds, []
    segments = [_shm.Received(fd) for fd in fds]
    layout = memoryview(parts[0])
    (count,) = _COUNT.unpack_from(layout)
    at = _COUNT.size
    index = 1
    objects = []
    for _ in range(count):
        (nbuf,) = _COUNT.unpack_from(layout, at)
        at += _COUNT.size
        data = parts[index]
        index += 1
        where: list[Any] = []
        inline: list[Buffer] = []
        segment: _shm.Received | None = None
        for _ in range(nbuf):
            fd_index, offset, size = _WHERE.unpack_from(layout, at)
            at += _WHERE.size
            if fd_index == _INLINE:
                where.append(None)
                inline.append(parts[index])
                index += 1
            else:
                segment = segments[fd_index]
                where.append((offset, size))
        objects.append(Packed(data, inline, segment, where))
    return objects


def decode(frame: Frame) -> Any:
    """The single object of a received frame."""
    if len(frame.parts) == 1 and not frame.fds:
        return pickle.loads(frame.parts[0])
    (item,) = unpack(frame)
    return item.load()


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
    import linecache

    line = linecache.getline(code.co_filename, code.co_firstlineno)
    return line.startswith(("def ", "async def ", "@"))


_SCALARS = frozenset({int, float, bool, complex, type(None)})
_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})


def likely_large(obj: object, depth: int = 2) -> bool:
    """A cheap guess whether sending ``obj`` would take long enough to stall a loop.

    Looks at sizes, not contents, a couple of levels deep: big ``bytes``/``str``,
    big containers, and buffers big enough for shared memory (a NumPy array, a
    bytearray, a memoryview), which cost a copy into the segment. This runs on
    every call: keep it to a few type checks for the usual small arguments.
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
    if kind is bytearray:
        return len(obj) >= LARGE  # type: ignore[arg-type]
    if kind is memoryview or hasattr(obj, "__array_interface__"):
        return bool(getattr(obj, "nbytes", 0) >= LARGE)
    return False


def dump_error(error: BaseException) -> bytes:
    """Pickle an exception raised by a task together with its traceback text.

    An exception that cannot make the round trip (unpicklable attributes, an
    ``__init__`` that unpickling cannot call) is replaced by a ``ProcessError``
    that names it and keeps its message.
    """
    import traceback

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
