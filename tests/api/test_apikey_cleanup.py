"""Deleting an ApiKey removes every Secret holding its plaintext, recorded or not."""

from __future__ import annotations

from typing import Any

import pytest
from support import Kube, wait_for

pytestmark = pytest.mark.cluster


def test_deleted_apikey_leaves_no_plaintext_behind(kube: Kube, make_world: Any) -> None:
    world = make_world()
    world.issued_key("cleanup")
    apikey = kube.get("apikey", "cleanup", world.control)
    assert apikey is not None
    uid = apikey["metadata"]["uid"]
    # What an operator stopped between writing a Secret and recording it in
    # status leaves behind: a copy no status names.
    kube.apply({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cleanup-orphan", "namespace": world.target,
                     "labels": {"tenantry.io/apikey-uid": uid}},
        "stringData": {"api-key": "tnty_orphan"},
    })  # fmt: skip

    kube.delete("apikey", "cleanup", world.control)
    wait_for(lambda: kube.get("apikey", "cleanup", world.control) is None, "the ApiKey to go")
    left = kube.kubectl(
        "get", "secrets", "-A", "-l", f"tenantry.io/apikey-uid={uid}", "-o", "name"
    ).split()
    assert left == []
