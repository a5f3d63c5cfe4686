"""What a process loads, and Kubernetes failing for real: no fakes, no servers of the suite.

The API and the operator are separate processes with separate dependencies:
the API's process never loads kopf or pyhelm3, the operator's never FastAPI.
Each is checked in a fresh interpreter, as `tenantry api serve` and
`tenantry operator` start, since this test process has imported everything.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

# Run in a fresh interpreter: import what one process imports, print which of
# the other process's packages got loaded along the way.
PROBE = """
import json, sys
{imports}
print(json.dumps(sorted(
    name for name in sys.modules if name.partition(".")[0] in {others!r}
    or any(name == prefix or name.startswith(prefix + ".") for prefix in {prefixes!r})
)))
"""


def loaded(imports: str, others: set[str], prefixes: set[str]) -> list[str]:
    """Modules of `others` (top-level names) or under `prefixes` loaded by `imports`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTRY_")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports, others=others, prefixes=prefixes)],
        capture_output=True, text=True, timeout=120, env=env, cwd="/", check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def test_the_api_process_loads_no_operator_dependency() -> None:
    found = loaded(
        "from tenantry.api.app import create_app\ncreate_app().openapi()",
        others={"kopf", "pyhelm3"},
        prefixes={"tenantry.operator"},
    )
    assert found == [], f"importing the API application loaded {found}"


def test_the_operator_process_loads_no_api_dependency() -> None:
    found = loaded(
        "import tenantry.operator.main",
        others={"fastapi", "starlette", "uvicorn"},
        prefixes={"tenantry.api"},
    )
    assert found == [], f"importing the operator loaded {found}"


# ------------------------------------------------- Kubernetes unreachable, for real


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (in the backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


@pytest.mark.parametrize("failure", ["refused", "silent", "unresolvable"])
async def test_an_unreachable_kubernetes_is_kubernetes_unavailable(
    failure: str, silent_port: int
) -> None:
    """lightkube's real transport errors (refused, timing out, no such host) become the 503."""
    import httpx2
    from lightkube import AsyncClient, KubeConfig

    from tenantry.api.errors import Unavailable
    from tenantry.api.tenants.kube import Kube

    server = {
        "refused": f"https://127.0.0.1:{closed_port()}",
        "silent": f"https://127.0.0.1:{silent_port}",
        "unresolvable": "https://kubernetes.invalid:6443",
    }[failure]
    config = KubeConfig.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        }
    )
    kube = Kube(AsyncClient(config=config, timeout=httpx2.Timeout(1.0), trust_env=False))
    try:
        with pytest.raises(Unavailable) as raised:
            await kube.tenant("a", "b")
    finally:
        await kube.close()
    assert raised.value.status_code == 503
    assert raised.value.code == "kubernetes_unavailable"
    assert raised.value.headers == {"Retry-After": "1"}
    # The transport's own error, not one a test made up.
    assert isinstance(raised.value.__cause__, httpx2.TransportError), repr(raised.value.__cause__)
