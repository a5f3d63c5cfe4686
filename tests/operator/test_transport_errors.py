"""The Kubernetes client's transport errors, as the operator's own client raises them,
become temporary errors retried in a few seconds (never kopf's default minute)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import kopf
import pytest
import yaml
from lightkube.resources.core_v1 import Namespace

from tenantry.operator import errors, kube
from tenantry.operator.kube import Cluster


def kubeconfig(path: Path, port: int) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


@asynccontextmanager
async def served(handle: object) -> AsyncIterator[int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(30)  # reads nothing, answers nothing
    writer.close()


async def hanging_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.close()  # the request read, no answer: the connection simply ends


async def mapped(call: object) -> kopf.TemporaryError:
    with pytest.raises(kopf.TemporaryError) as caught:
        async with errors.kubernetes():
            await call  # type: ignore[misc]
    return caught.value


def assert_short_retry(error: kopf.TemporaryError, kind: str) -> None:
    assert kind in str(error)
    assert error.delay == errors.TRANSPORT_DELAY
    assert error.delay < 60  # kopf's default backoff for errors it does not know


async def test_connection_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with served(silent) as port:
        pass  # the port is closed again
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", port)))
    cluster = Cluster(kube.client(connections=1, timeout=2))
    assert_short_retry(await mapped(cluster.namespace_phase("x")), "ConnectError")


async def test_connection_reset_without_an_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(hanging_up) as port:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", port)))
        cluster = Cluster(kube.client(connections=1, timeout=2))
        assert_short_retry(await mapped(cluster.namespace_phase("x")), "RemoteProtocolError")


async def test_a_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with served(silent) as port:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", port)))
        cluster = Cluster(kube.client(connections=1, timeout=0.5))
        assert_short_retry(await mapped(cluster.namespace_phase("x")), "ReadTimeout")


async def test_an_exhausted_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with served(silent) as port:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", port)))
        cluster = Cluster(kube.client(connections=1, timeout=0.5))

        async def watch() -> None:
            async for _ in cluster.client.watch(Namespace):
                pass

        # A watch (no read timeout) holds the only connection; the next request waits
        # for one, and gives up.
        watching = asyncio.ensure_future(watch())
        try:
            await asyncio.sleep(0.2)
            assert_short_retry(await mapped(cluster.namespace_phase("x")), "PoolTimeout")
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
