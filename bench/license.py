"""Benchmark of tenantry.license: signing and verifying with loaded keys vs. parsing PEM per call.

Run: ``.venv/bin/python bench/license.py [--seconds PER_FIGURE]``

"Loaded" uses a ``SigningKey`` / ``KeySet`` built once, as the library intends.
"Naive" does the same ``issue`` / ``verify`` calls but loads the key from PEM on
every call (the private key PEM for signing, the public key PEM for verifying).

Goals (reported, never asserted; the script always exits 0):

* EdDSA signing is at least 10x faster than RS256 signing (loaded keys). The
  raw Ed25519 / RSA-2048 signature ratio of ``cryptography`` on the machine is
  printed beside it: it bounds what any JWT layer can reach.
* The loaded-key path is at least 50x faster than the naive path, judged on
  RS256 signing: that is where key loading dominates, because loading an RSA
  private key validates it (primality checks), which costs far more than one
  signature. For verifying, and for Ed25519, parsing a public key is cheap next
  to the signature check and the JSON work, so those ratios are shown for
  information only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from tenantry.license import (
    Algorithm,
    KeySet,
    LicenseClaims,
    LicenseState,
    Plan,
    SigningKey,
    Subscription,
    SubscriptionStatus,
    Tenant,
    issue,
    new_license_claims,
    verify,
)

ISSUER = "https://licenses.example.com"
AUDIENCE = "tenantry-instance"
NOW = datetime(2030, 1, 1, tzinfo=UTC)
SPEEDUP_GOAL_EDDSA = 10.0
SPEEDUP_GOAL_LOADED = 50.0


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``operation``, measured for about ``seconds``."""
    operation()  # warm-up: first-call imports and caches are not the steady state
    calls = 0
    started = time.perf_counter()
    while True:
        operation()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls / elapsed


def claims() -> LicenseClaims:
    return new_license_claims(
        tenant=Tenant(id="tnt_42", name="Acme Robotics"),
        plan=Plan(code="pro", name="professional"),
        subscription=Subscription(status=SubscriptionStatus.ACTIVE),
        features={"jobs": True, "scheduled_jobs": True, "ota_updates": True},
        limits={"devices": 50, "users": -1},
        now=NOW,
        ttl=timedelta(days=30),
        issuer=ISSUER,
        audience=AUDIENCE,
    )


def measure(algorithm: Algorithm, seconds: float) -> dict[str, float]:
    key = SigningKey.generate(algorithm)
    private_pem, public_pem = key.private_pem(), key.public_pem()
    keys = KeySet([key])
    license_claims = claims()
    token = issue(license_claims, key)

    def check(result: KeySet) -> None:
        status = verify(token, result, issuer=ISSUER, audience=AUDIENCE, now=NOW)
        assert status.state is LicenseState.VALID, status.reason

    check(keys)
    return {
        "sign_loaded": rate(lambda: issue(license_claims, key), seconds),
        "sign_naive": rate(
            lambda: issue(license_claims, SigningKey.from_pem(private_pem)), seconds
        ),
        "verify_loaded": rate(lambda: check(keys), seconds),
        "verify_naive": rate(lambda: check(KeySet.from_pems([public_pem])), seconds),
    }


def primitive_ratio(seconds: float) -> float:
    """Ed25519 vs RSA-2048 raw signatures (no JWT work): the ceiling for goal 1."""
    message = b"x" * 700  # about the size of a license's signing input
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_rate = rate(lambda: ed_key.sign(message), seconds)
    rsa_rate = rate(lambda: rsa_key.sign(message, padding.PKCS1v15(), hashes.SHA256()), seconds)
    return ed_rate / rsa_rate


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=1.6, help="time per figure (8 figures; default 1.6)"
    )
    seconds = parser.parse_args().seconds

    results = {algorithm: measure(algorithm, seconds) for algorithm in ("RS256", "EdDSA")}
    ceiling = primitive_ratio(seconds / 3)

    print(f"tenantry.license benchmark ({seconds:g} s per figure)\n")
    header = ("algorithm", "operation", "loaded key/s", "PEM per call/s", "ratio")
    print("{:<9} {:<9} {:>13} {:>15} {:>8}".format(*header))
    for algorithm, figures in results.items():
        for operation in ("sign", "verify"):
            loaded = figures[f"{operation}_loaded"]
            naive = figures[f"{operation}_naive"]
            print(
                f"{algorithm:<9} {operation:<9} {loaded:>13,.0f} {naive:>15,.0f} "
                f"{loaded / naive:>7.1f}x"
            )

    eddsa_vs_rsa = results["EdDSA"]["sign_loaded"] / results["RS256"]["sign_loaded"]
    loaded_vs_naive = results["RS256"]["sign_loaded"] / results["RS256"]["sign_naive"]
    print()
    print(
        f"Goal 1: EdDSA signing >= {SPEEDUP_GOAL_EDDSA:g}x RS256 signing (loaded keys): "
        f"{eddsa_vs_rsa:.1f}x  {verdict(eddsa_vs_rsa >= SPEEDUP_GOAL_EDDSA)}"
    )
    print(
        f"        ceiling on this machine: raw Ed25519 vs RSA-2048 signatures (cryptography, "
        f"no JWT work) {ceiling:.1f}x"
    )
    print(
        f"Goal 2: loaded key >= {SPEEDUP_GOAL_LOADED:g}x PEM-per-call, judged on RS256 signing "
        f"(where loading the RSA private key dominates): {loaded_vs_naive:.1f}x  "
        f"{verdict(loaded_vs_naive >= SPEEDUP_GOAL_LOADED)}"
    )
    print(
        "        for information: RS256 verify {:.1f}x, EdDSA sign {:.1f}x, EdDSA verify {:.1f}x "
        "(public-key or Ed25519 parsing is cheap, so these are not judged)".format(
            results["RS256"]["verify_loaded"] / results["RS256"]["verify_naive"],
            results["EdDSA"]["sign_loaded"] / results["EdDSA"]["sign_naive"],
            results["EdDSA"]["verify_loaded"] / results["EdDSA"]["verify_naive"],
        )
    )


if __name__ == "__main__":
    main()
