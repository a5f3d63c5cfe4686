"""kube-apiserver stopped and restarted mid-reconcile: the API answers 503 with
Retry-After while Kubernetes is away (never a 500), and the operator and the API
carry on afterwards without a restart of their own, leaving no duplicate Helm
revision or license behind.

It stops the suite's own kube-apiserver (etcd runs on), so it cannot run against
a cluster of yours (TENANTRY_TEST_KUBECONFIG).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
from api_harness import ApiServer, World
from support import (
    Kube,
    OperatorProcess,
    is_ready,
    plan,
    ready_tenant,
    subscription,
    tenant,
    unique_names,
)
from testbed import ControlPlane

pytestmark = [pytest.mark.cluster, pytest.mark.faults]

OUTAGE = 8.0
"""Seconds kube-apiserver stays away: longer than the API's catalog TTL (1 s in the suite)."""


async def ask_while_away(api: ApiServer, world: World, key: str) -> list[httpx.Response]:
    """What an admin and an instance get while Kubernetes is away."""
    answers = []
    deadline = time.monotonic() + OUTAGE - 2
    async with api.admin() as admin, api.client(key) as instance:
        while time.monotonic() < deadline:
            answers += [
                await admin.get(f"/admin/tenants/{world.control}/{world.tenant}/api-keys"),
                await admin.get(f"/admin/tenants/{world.control}/{world.tenant}/licenses"),
                await instance.get("/v1/license"),
                await instance.get("/v1/quota"),
            ]
            await asyncio.sleep(0.5)
    return answers


async def test_kubernetes_away_mid_reconcile_is_a_503_and_everyone_recovers(
    control_plane: ControlPlane | None, kube: Kube, operator: OperatorProcess,
    api_server: ApiServer, make_world: Callable[..., World],
) -> None:  # fmt: skip
    assert control_plane is not None, "this test restarts the suite's own kube-apiserver"
    world = make_world()
    key = world.issued_key("outage", scopes=["usage:write", "quota:consume"])
    assert operator.process is not None
    operator_pid = operator.process.pid

    # A Tenant applied just before the outage: its first reconcile is cut short.
    names = unique_names(kube)
    kube.apply(
        plan(names["plan"]),
        tenant(names["tenant"], names["control"]),
        subscription(names["tenant"], names["control"], names["tenant"], names["plan"]),
    )
    await asyncio.sleep(0.3)
    control_plane.halt_apiserver()
    try:
        await asyncio.sleep(1.5)  # past the API's catalog TTL: it must ask Kubernetes
        answers = await ask_while_away(api_server, world, key)
    finally:
        await asyncio.to_thread(control_plane.resume_apiserver)

    statuses = {a.status_code for a in answers}
    assert statuses <= {200, 503}, [(a.status_code, a.text) for a in answers]
    assert 503 in statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["Retry-After"]
            assert answer.json()["error"]["code"] == "kubernetes_unavailable"

    # Both carry on by themselves: the cut reconcile finishes, the API answers again.
    ready = await asyncio.to_thread(ready_tenant, kube, names, 120)
    assert is_ready(ready)
    assert operator.process.poll() is None
    assert operator.process.pid == operator_pid
    release = kube.release(names["target"], "instance")
    assert release is not None
    assert (release["status"], release["revision"]) == ("deployed", "1")
    licenses = kube.kubectl("get", "secrets", "-n", names["target"], "-o", "name",
                            "-l", "tenantry.io/tenant")  # fmt: skip
    assert licenses.split() == ["secret/tenantry-license"]
    deadline = time.monotonic() + 30
    async with api_server.admin() as admin:
        while (
            answer := await admin.get(f"/admin/tenants/{world.control}/{world.tenant}/api-keys")
        ).status_code != 200:
            assert time.monotonic() < deadline, answer.text
            await asyncio.sleep(0.5)
