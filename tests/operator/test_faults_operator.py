"""The operator SIGKILLed again and again while it provisions, then deletes, 50 Tenants.

Started again each time (as a Deployment would restart it), it must end where an
uninterrupted operator ends: every Tenant Ready with one Helm revision and one
license issued, no namespace left behind after deletion, no Tenant stuck.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import sqlalchemy
from support import Kube, OperatorProcess, all_ready, apply_tenants, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.faults]

TENANTS = 50
KILLS = 4
BETWEEN_KILLS = 3.0


def kill_repeatedly(operator: OperatorProcess, done: Callable[[], bool]) -> int:
    """SIGKILL the operator every few seconds and start it again, KILLS times or until
    `done`; how many times it was killed."""
    kills = 0
    while kills < KILLS and not done():
        time.sleep(BETWEEN_KILLS)
        assert operator.process is not None
        operator.process.kill()
        operator.process.wait(10)
        kills += 1
        operator.start()
    return kills


def test_an_operator_killed_again_and_again_provisions_and_deletes_exactly_once(
    kube: Kube, operator: OperatorProcess, database: str
) -> None:
    tenants = apply_tenants(kube, TENANTS)
    control = tenants[0]["control"]
    targets = {names["target"] for names in tenants}

    def ready_count() -> int:
        listed = kube.kubectl(
            "get", "tenants", "-n", control, "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
        )  # fmt: skip
        return listed.split().count("True")

    assert kill_repeatedly(operator, lambda: ready_count() == TENANTS) >= 2
    all_ready(kube, tenants, timeout=300)

    for names in tenants:
        release = kube.release(names["target"], "instance")
        assert release is not None, names
        # An install cut short by a kill is done again from scratch: no second revision.
        assert (release["status"], release["revision"]) == ("deployed", "1"), names
    engine = sqlalchemy.create_engine(database)
    try:
        with engine.connect() as conn:
            issued = conn.execute(
                sqlalchemy.text(
                    "SELECT tenant_name, count(*) FROM license_history WHERE action = 'issued'"
                    " AND tenant_namespace = :control GROUP BY tenant_name"
                ),
                {"control": control},
            ).all()
    finally:
        engine.dispose()
    assert dict(issued) == {names["tenant"]: 1 for names in tenants}

    # Deleting them all, the operator killed meanwhile: nothing stuck, nothing left.
    kube.kubectl("delete", "tenants", "--all", "-n", control, "--wait=false")

    def namespaces_left() -> set[str]:
        listed = kube.kubectl("get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}")
        return targets & set(listed.split())

    kill_repeatedly(operator, lambda: not namespaces_left())
    wait_for(lambda: not namespaces_left(), "every tenant namespace to be gone", 300, 1)
    wait_for(
        lambda: kube.kubectl("get", "tenants", "-n", control, "-o", "name").strip() == "",
        "every Tenant to be gone",
        120,
        1,
    )
