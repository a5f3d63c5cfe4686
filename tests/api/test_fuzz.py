"""schemathesis over the served OpenAPI document: no 5xx, every answer as documented.

It runs the fuzzer's own command line against an API with everything on (Stripe
through stripe-mock) with three sets of credentials: the admin token, an
instance's API key with every scope, and none. Each operation gets a bounded
number of generated requests, valid and invalid, in every phase (examples,
coverage of the schema's edges, fuzzing, stateful sequences).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from api_harness import ApiServer, World
from stripe_support import stripe_env
from support import REPO
from testbed import StripeMock

pytestmark = [pytest.mark.cluster, pytest.mark.faults]

SCHEMATHESIS = REPO / ".venv" / "bin" / "schemathesis"
CHECKS = ",".join(
    ["not_a_server_error", "status_code_conformance", "response_schema_conformance",
     "content_type_conformance"]
)  # fmt: skip


@pytest.fixture(scope="module")
def fuzzed(
    start_api: Callable[..., ApiServer], stripe_mock: StripeMock, database: str
) -> Iterator[ApiServer]:
    server = start_api(**stripe_env(stripe_mock, database, "fuzz"))
    yield server
    server.stop()  # its Stripe worker must take no other module's events


@pytest.mark.parametrize("credentials", ["admin", "api-key", "none"])
def test_no_request_gets_a_5xx_or_an_undocumented_answer(
    fuzzed: ApiServer, make_world: Callable[..., World], credentials: str, tmp_path: Path
) -> None:
    header = {
        "admin": lambda: f"Authorization: Bearer {fuzzed.admin_token}",
        "api-key": lambda: (
            "Authorization: Bearer "
            + make_world().issued_key(
                "fuzz", scopes=["usage:write", "quota:consume", "billing:read"]
            )
        ),
        "none": lambda: "User-Agent: schemathesis",
    }[credentials]()
    report = tmp_path / "schemathesis.txt"
    result = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{fuzzed.url}/openapi.json", "--header", header,
         "--checks", CHECKS, "--max-examples", "5", "--seed", "20261130",
         "--request-timeout", "15", "--workers", "1", "--no-color"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    report.write_text(result.stdout + result.stderr)
    summary = result.stdout[result.stdout.find("SUMMARY") :]
    print(summary)
    assert result.returncode == 0, result.stdout[-6000:]
