"""A license follows its subscription: re-issued, revoked, signed by rotated keys."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from typing import Any

import jwt as pyjwt
import psycopg
import pytest
from jwcrypto import jwk
from jwcrypto import jwt as jwcrypto_jwt
from support import (
    REPO,
    Kube,
    OperatorProcess,
    condition,
    decoded,
    dig,
    get_tenant,
    license_secret,
    plan,
    provision,
    published_keys,
    unique_names,
    wait_for,
)

from tenantry import license as lic

pytestmark = pytest.mark.cluster


@pytest.fixture
def names(kube: Kube) -> dict[str, str]:
    return unique_names(kube)


def current_token(kube: Kube, names: dict[str, str]) -> str | None:
    secret = license_secret(kube, names["target"])
    if not secret or "license.jwt" not in (secret.get("data") or {}):
        return None
    return decoded(secret, "license.jwt")


def claims_of(kube: Kube, token: str) -> dict[str, Any]:
    """Verify with jwcrypto against the published keys, as an instance would."""
    keyset = jwk.JWKSet.from_json(json.dumps(published_keys(kube).to_jwks()))
    verified = jwcrypto_jwt.JWT(jwt=token, key=keyset, algs=["RS256", "EdDSA"])
    return json.loads(verified.claims)  # type: ignore[no-any-return]


def new_license(kube: Kube, names: dict[str, str], not_jti: str) -> dict[str, Any]:
    token = wait_for(
        lambda: (t := current_token(kube, names)) and claims_of(kube, t)["jti"] != not_jti and t,
        "a new license in the Secret",
    )
    return claims_of(kube, token)


def revocation_list(kube: Kube) -> lic.RevocationList:
    secret = kube.get("secret", "tenantry-revocations", "tenantry-system")
    assert secret is not None
    return lic.RevocationList.verify(
        decoded(secret, "revocations.jwt"), published_keys(kube), issuer="tenantry"
    )


def leave_an_invoice_unpaid(kube: Kube, database: str, names: dict[str, str]) -> None:
    """An open invoice a day past its due date, as a billing run leaves one nobody paid."""
    subscription = kube.get("subscription", names["tenant"], names["control"])
    assert subscription is not None
    uid = subscription["metadata"]["uid"]
    with psycopg.connect(database.replace("+psycopg", "")) as conn:
        wait_for(
            lambda: conn.execute("SELECT 1 FROM subscriptions WHERE uid = %s", (uid,)).fetchone(),
            "the operator to store the subscription's terms",
        )
        conn.execute(
            "INSERT INTO invoices (subscription_uid, tenant_uid, boundary, status, number,"
            " currency, period_start, period_end, plan_name, subtotal, total, created_at,"
            " finalize_after, issued_at, due_at)"
            " SELECT uid, tenant_uid, now() - interval '9 days', 'open', 'TEST-' || uid,"
            " currency, now() - interval '9 days', now() + interval '21 days', plan_name,"
            " 4900, 4900, now(), now(), now() - interval '8 days', now() - interval '1 day'"
            " FROM subscriptions WHERE uid = %s",
            (uid,),
        )


def cancel(kube: Kube, names: dict[str, str]) -> None:
    """Delete the Subscription: it is canceled at once."""
    kube.kubectl("delete", "subscription", names["tenant"], "-n", names["control"])


def test_plan_upgrade_reissues_the_license_with_the_new_limits(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    ready = provision(kube, names)
    first = ready["status"]["license"]["id"]

    kube.apply(plan(names["plan"], devices=500))
    claims = new_license(kube, names, not_jti=first)
    assert claims["limits"]["devices"] == 500
    # The Event follows the Secret (kopf posts Events on its own, shortly after).
    wait_for(
        lambda: (
            "LicenseReissued"
            in kube.kubectl(
                "get", "events", "-n", names["control"], "-o", "jsonpath={.items[*].reason}"
            ).split()
        ),
        "the LicenseReissued Event",
    )
    wait_for(
        lambda: dig(get_tenant(kube, names), "status", "license", "id") == claims["jti"],
        "status to name the re-issued license",
    )


def test_failed_payment_reissues_and_cancellation_revokes(
    kube: Kube, operator: OperatorProcess, database: str, names: dict[str, str]
) -> None:
    ready = provision(kube, names)
    first = ready["status"]["license"]["id"]

    leave_an_invoice_unpaid(kube, database, names)
    claims = new_license(kube, names, not_jti=first)
    assert claims["subscription"]["status"] == "past_due"
    payment = wait_for(
        lambda: (
            (c := condition(get_tenant(kube, names), "PaymentCurrent"))
            and c["status"] == "False"
            and c
        ),
        "PaymentCurrent=False",
    )
    assert payment["reason"] == "PaymentFailed"

    cancel(kube, names)
    wait_for(lambda: current_token(kube, names) is None, "the license to leave the Secret")
    assert revocation_list(kube).is_revoked(claims["jti"])
    revoked = wait_for(
        lambda: (
            (c := condition(get_tenant(kube, names), "LicenseIssued"))
            and c["status"] == "False"
            and c
        ),
        "LicenseIssued=False",
    )
    assert revoked["reason"] == "Revoked"
    wait_for(
        lambda: (
            dig(
                kube.get("deployment", "instance-customer-instance", names["target"]),
                "spec",
                "replicas",
            )
            == 0
        ),
        "the instance to be scaled to zero",
    )


def test_explicit_revoke_replaces_a_leaked_license(
    kube: Kube, operator: OperatorProcess, database: str, names: dict[str, str]
) -> None:
    ready = provision(kube, names)
    leaked_token = current_token(kube, names)
    assert leaked_token is not None
    leaked = ready["status"]["license"]["id"]

    kube.kubectl(
        "annotate", "tenant", names["tenant"], "-n", names["control"],
        f"tenantry.io/revoke-license={leaked}",
    )  # fmt: skip
    replacement = new_license(kube, names, not_jti=leaked)
    revocations = revocation_list(kube)
    assert revocations.is_revoked(leaked)
    assert not revocations.is_revoked(replacement["jti"])
    verdict = lic.verify(
        leaked_token,
        published_keys(kube),
        issuer="tenantry",
        audience="tenantry-instance",
        revocations=revocations,
    )
    assert verdict.state == lic.LicenseState.REVOKED
    # In the audit trail, by the tool that asked (the person is in the API server's log).
    with psycopg.connect(database.replace("+psycopg", "")) as conn:
        trail = conn.execute(
            "SELECT actor, details->>'license' FROM admin_audit WHERE action = 'license.revoked'"
            " AND target = %s",
            (f"{names['control']}/{names['tenant']}",),
        ).fetchall()
    assert trail == [("kubernetes:kubectl-annotate", leaked)]


def test_rotated_key_signs_new_licenses_while_old_ones_still_verify(
    kube: Kube, operator: OperatorProcess, names: dict[str, str]
) -> None:
    ready = provision(kube, names)
    old_token = current_token(kube, names)
    assert old_token is not None
    old_kid = pyjwt.get_unverified_header(old_token)["kid"]

    result = subprocess.run(
        [str(REPO / ".venv/bin/tenantry"), "keys", "rotate"],
        env={**os.environ, "KUBECONFIG": str(kube.kubeconfig)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "New signing key" in result.stdout
    new_kid = result.stdout.split("New signing key ", 1)[1].split()[0]
    assert new_kid != old_kid

    kube.apply(plan(names["plan"], devices=51))  # a change that re-issues the license
    claims = new_license(kube, names, not_jti=ready["status"]["license"]["id"])
    new_token = current_token(kube, names)
    assert new_token is not None
    assert pyjwt.get_unverified_header(new_token)["kid"] == new_kid
    assert claims["limits"]["devices"] == 51
    old = lic.verify(
        old_token, published_keys(kube), issuer="tenantry", audience="tenantry-instance"
    )
    assert old.state == lic.LicenseState.VALID, old.reason
    jwks = json.loads(decoded(license_secret(kube, names["target"]), "jwks.json"))
    assert {old_kid, new_kid} <= {key["kid"] for key in jwks["keys"]}


def test_history_records_every_issue_and_revocation_as_hashes_never_tokens(
    kube: Kube, operator: OperatorProcess, database: str, names: dict[str, str]
) -> None:
    ready = provision(kube, names)
    first_token = current_token(kube, names)
    assert first_token is not None
    kube.apply(plan(names["plan"], devices=75))
    second = new_license(kube, names, not_jti=ready["status"]["license"]["id"])
    second_token = current_token(kube, names)
    assert second_token is not None
    cancel(kube, names)
    wait_for(lambda: current_token(kube, names) is None, "the license to be revoked")

    with psycopg.connect(database.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT license_id, action, plan, limits, token_sha256, history::text"
            " FROM license_history AS history"
            " WHERE tenant_namespace = %s AND tenant_name = %s ORDER BY id",
            (names["control"], names["tenant"]),
        ).fetchall()
    assert [(row[0], row[1]) for row in rows] == [
        (ready["status"]["license"]["id"], "issued"),
        (second["jti"], "reissued"),
        (second["jti"], "revoked"),
    ]
    assert rows[0][3] == {"devices": 50, "users": -1}
    assert rows[1][3] == {"devices": 75, "users": -1}
    assert rows[0][4] == hashlib.sha256(first_token.encode()).hexdigest()
    assert rows[1][4] == rows[2][4] == hashlib.sha256(second_token.encode()).hexdigest()
    for row in rows:
        assert first_token not in row[5]
        assert second_token not in row[5]
        assert second_token.split(".")[2] not in row[5], "no part of a signature is kept"
