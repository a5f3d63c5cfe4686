"""Path parameters naming Kubernetes objects: checked before Kubernetes is asked, so a
name that cannot exist is a 422 saying so, not a round trip (or a 503)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from tenantry.core.resources import NAME_PATTERN

Namespace = Annotated[
    str, Path(pattern=NAME_PATTERN, max_length=63, description="The Tenant's namespace.")
]
Name = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63, description="The Tenant's name.")]
