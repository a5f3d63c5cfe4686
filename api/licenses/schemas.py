"""Wire shapes of license delivery and history."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field


class LicenseDocument(BaseModel):
    license: str = Field(description="The signed license (a JWT); verify it with the JWKS.")
    license_id: str | None = Field(default=None, description="Its `jti`.")
    plan: str | None = None
    issued_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    jwks_url: str = Field(default="/v1/license/jwks.json", description="Where the keys are.")


class RevocationListDocument(BaseModel):
    revocation_list: str = Field(
        description="The signed list of revoked license ids (a JWT); verify it with the JWKS."
    )


class JsonWebKeySet(BaseModel):
    keys: list[dict[str, Any]]


class LicenseHistoryEntry(BaseModel):
    license_id: str
    action: str
    plan: str
    features: dict[str, Any]
    limits: dict[str, Any]
    token_sha256: str | None
    issued_at: dt.datetime
    expires_at: dt.datetime
    recorded_at: dt.datetime


class LicenseHistory(BaseModel):
    tenant: str
    licenses: list[LicenseHistoryEntry]
