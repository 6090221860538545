"""The Pool API tests every backend passes (``_pool_api``), on the local backend: worker
processes of this machine, as ``aiomp.Pool()`` makes them, passed in through ``backend=``
like any other engine. The same module runs on the in-process fake backend
(``test_backend_seam.py``) and on a Dask cluster (``test_dask.py``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aiomp.backends.local import LocalBackend

from . import _work
from ._pool_api import MakeBackend, PoolAPITests


@pytest.fixture(params=["spawn", "forkserver"])
def pool_backend(request: pytest.FixtureRequest) -> MakeBackend:
    return lambda: LocalBackend(2, context=request.param)


@pytest.fixture
def lose_worker() -> Callable[[], None]:
    return _work.exit_now  # the worker process ends mid-task


class TestPoolAPI(PoolAPITests):
    """The Pool API tests of ``_pool_api``, on worker processes of this machine."""
