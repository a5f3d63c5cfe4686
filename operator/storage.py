"""Where kopf keeps its state on our objects, with the annotations that ask for a pass.

kopf keeps, in annotations under `tenantry.io/`, each object's handler progress
and its last handled state, and compares that state with the object's to call
the update handlers. It leaves every other `tenantry.io/` annotation out of
the comparison, twice (as another kopf operator's storage, and as its own
progress). Three of them exist to make a pass run at once, so both storages
here keep them in:

- `tenantry.io/reconcile-cause`: a nudge (a Plan or Subscription the Tenant uses changed);
- `tenantry.io/rollout`: a rollout moved the Tenant to another chart version;
- `tenantry.io/revoke-license`: someone asked for the license to be revoked.

Without this, each would wait for the object's next timer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf

from tenantry.core.names import RECONCILE_CAUSE_ANNOTATION, REVOKE_LICENSE_ANNOTATION
from tenantry.core.rollout import ASSIGNMENT_ANNOTATION

TRIGGERS = (RECONCILE_CAUSE_ANNOTATION, ASSIGNMENT_ANNOTATION, REVOKE_LICENSE_ANNOTATION)


def _triggers(essence: Any) -> dict[str, Any]:
    annotations = (essence.get("metadata") or {}).get("annotations") or {}
    return {key: annotations[key] for key in TRIGGERS if key in annotations}


class DiffBase(kopf.AnnotationsDiffBaseStorage):
    """The last handled state, with the trigger annotations in it."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        kept = [("metadata", "annotations", key) for key in TRIGGERS]
        return super().build(body=body, extra_fields=[*(extra_fields or ()), *kept])


class Progress(kopf.AnnotationsProgressStorage):
    """Handler progress, whose clearing of a state leaves the trigger annotations."""

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        kept = _triggers(essence)
        cleared = super().clear(essence=essence)
        if kept:
            metadata = cleared.setdefault("metadata", {})
            metadata.setdefault("annotations", {}).update(kept)
        return cleared
