"""The Dask backend over TLS, against a ``dask scheduler`` and a ``dask worker`` started as processes.

The certificates are made here (``distributed.Security.temporary()``, which needs
``cryptography``) and written as PEM files for the command lines: one self-signed
certificate is the authority and every role's certificate, as Dask's own temporary
security has it. Both processes require TLS of every peer; mutual TLS is Dask's only
authentication, so a client without the certificate is refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiomp

from . import _dask_cluster, _work

pytestmark = pytest.mark.anyio

NO_DASK = "the Dask backend needs distributed: pip install 'aiomp[dask]'"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    distributed = pytest.importorskip("distributed", reason=NO_DASK)
    pytest.importorskip("cryptography", reason="TLS certificates are made with cryptography")
    folder = tmp_path_factory.mktemp("tls")
    temporary = distributed.Security.temporary()
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    files["ca"].write_text(temporary.tls_ca_file)
    files["cert"].write_text(temporary.tls_scheduler_cert)
    files["key"].write_text(temporary.tls_scheduler_key)
    for path in files.values():
        path.chmod(0o600)
    return files


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, certificates: dict[str, Path]) -> Iterator[str]:
    with _dask_cluster.cli_cluster(tmp_path_factory.mktemp("tls-cluster"), tls=certificates) as address:
        yield address


def _security(certificates: dict[str, Path]) -> Any:
    import distributed

    return distributed.Security(
        tls_ca_file=str(certificates["ca"]),
        tls_client_cert=str(certificates["cert"]),
        tls_client_key=str(certificates["key"]),
        require_encryption=True,
    )


async def test_a_pool_over_tls(tls_cluster: str, certificates: dict[str, Path]) -> None:
    assert tls_cluster.startswith("tls://127.0.0.1:")
    backend = aiomp.DaskBackend(tls_cluster, security=_security(certificates), timeout=30)
    async with aiomp.Pool(backend=backend) as pool:
        with anyio.fail_after(30):  # the worker may still be joining the scheduler
            assert await pool.apply(_work.add, (1, 2)) == 3
        assert pool.processes == 1
        assert await pool.map(_work.inc, range(50)) == list(range(1, 51))
        assert [x async for x in pool.imap(lambda x: x * x, range(4))] == [0, 1, 4, 9]
        with pytest.raises(ValueError, match="boom 3") as info:
            await pool.apply(_work.boom, (3,))
        assert isinstance(info.value.__cause__, aiomp.RemoteTraceback)


async def test_a_stranger_is_refused_in_time(tls_cluster: str) -> None:
    """Mutual TLS: a client whose certificate the cluster's authority did not sign never gets in."""
    import distributed

    timeout = 2.0
    started = time.monotonic()
    with pytest.raises(OSError):  # TimeoutError among them
        stranger = distributed.Security.temporary()
        async with aiomp.Pool(backend=aiomp.DaskBackend(tls_cluster, security=stranger, timeout=timeout)):
            pytest.fail("entered a TLS cluster with a foreign certificate")
    assert time.monotonic() - started < timeout + 5


def test_a_tls_address_needs_security(tls_cluster: str) -> None:
    with pytest.raises(ValueError, match="is a TLS address: pass security="):
        aiomp.DaskBackend(tls_cluster)
