"""The public surface: what ``import aiomp`` offers, and what a worker imports."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import aiomp


def test_all_names_resolve_with_docstrings() -> None:
    for name in aiomp.__all__:
        value = getattr(aiomp, name)
        assert value.__doc__, f"aiomp.{name} has no docstring"
        assert value.__module__ == "aiomp", name
    assert sorted(aiomp.__all__) == aiomp.__all__
    assert set(aiomp.__all__) <= set(dir(aiomp))


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        aiomp.Nope  # noqa: B018


def test_public_methods_have_docstrings() -> None:
    classes = [getattr(aiomp, name) for name in aiomp.__all__ if isinstance(getattr(aiomp, name), type)]
    for cls in classes:
        for name, member in vars(cls).items():
            if callable(member) and not name.startswith("_"):
                assert member.__doc__, f"{cls.__name__}.{name} has no docstring"


def test_errors_pickle_and_form_a_tree() -> None:
    error = aiomp.WorkerDiedError(-9)
    assert "signal 9" in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, aiomp.WorkerDiedError) and again.exitcode == -9
    assert issubclass(aiomp.PoolClosedError, ValueError)
    for cls in (aiomp.WorkerDiedError, aiomp.PoolClosedError, aiomp.BrokenPoolError):
        assert issubclass(cls, aiomp.ProcessError)
    import multiprocessing

    assert issubclass(aiomp.ProcessError, multiprocessing.ProcessError)


def test_worker_import_is_light() -> None:
    """A worker imports aiomp._worker only: no anyio, no asyncio, no cloudpickle."""
    code = (
        "import sys, aiomp._worker; print(sorted(m for m in ('anyio', 'asyncio', 'cloudpickle') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"
