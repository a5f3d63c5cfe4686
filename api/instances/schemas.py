"""Wire shapes of the instance heartbeat."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from tenantry.core.resources import METRIC_PATTERN, InstanceHealth

MAX_FIGURES: Final = 16
MAX_FIGURE_DIGITS: Final = 18
"""A figure has at most 18 digits before the point and 9 after: it fits a bigint or a
numeric(27, 9) should anything ever aggregate it, and no honest figure is larger."""
_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,9})?$")
_LARGEST = 10**MAX_FIGURE_DIGITS - 1

FigureValue = int | str
"""A whole number, or a decimal written as a string (`"0.75"`): never a float."""


def check_figure(name: str, value: object) -> FigureValue:
    """The value, if it is a figure; a readable refusal if not."""
    if isinstance(value, bool | float):
        raise ValueError(
            f"figures.{name}: {value!r} is a {type(value).__name__}; send a whole number "
            'or a decimal as a string, e.g. 42 or "0.75" (floats are refused: they round)'
        )
    if isinstance(value, int):
        if abs(value) > _LARGEST:
            raise ValueError(f"figures.{name}: {value} has more than {MAX_FIGURE_DIGITS} digits")
        return value
    if isinstance(value, str):
        if not _DECIMAL.match(value):
            raise ValueError(
                f"figures.{name}: {value[:40]!r} is not a decimal: write it as digits with "
                'an optional sign and point, e.g. "-12" or "0.75" (at most 18 digits before '
                "the point and 9 after)"
            )
        return value
    raise ValueError(
        f"figures.{name}: a {type(value).__name__} is not a figure; send a whole number or "
        'a decimal as a string, e.g. 42 or "0.75"'
    )


class Heartbeat(BaseModel):
    """What an instance says of itself, every few seconds to a minute."""

    model_config = ConfigDict(extra="forbid")

    version: StrictStr = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[0-9A-Za-z][0-9A-Za-z._+-]*$",
        description="The version the instance runs, e.g. `1.4.2` or `2025.06.1+build.7`.",
    )
    health: InstanceHealth = Field(description="`healthy`, `degraded` or `unhealthy`.")
    message: StrictStr | None = Field(
        default=None,
        max_length=256,
        description="Why it is degraded or unhealthy, for people (at most 256 characters).",
    )
    figures: Annotated[
        dict[StrictStr, object],
        Field(
            default_factory=dict,
            description=f"Up to {MAX_FIGURES} figures the instance wants seen (`devices`, "
            "`queue_depth`, `cpu_load`): snake_case names, each a whole number or a decimal "
            'as a string (`"0.75"`), never a float. Not billed: usage goes to /v1/usage.',
            json_schema_extra={
                "additionalProperties": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                "maxProperties": MAX_FIGURES,
            },
        ),
    ]

    @field_validator("message")
    @classmethod
    def _printable(cls, message: str | None) -> str | None:
        if message is not None and not message.isprintable():
            raise ValueError("control characters (newlines, NUL) are not allowed in a message")
        return message

    @field_validator("figures")
    @classmethod
    def _figures(cls, figures: dict[str, object]) -> dict[str, FigureValue]:
        if len(figures) > MAX_FIGURES:
            raise ValueError(
                f"{len(figures)} figures; at most {MAX_FIGURES} may be sent: keep the few "
                "that tell whether the instance is well"
            )
        checked: dict[str, FigureValue] = {}
        for name, value in figures.items():
            if not re.match(METRIC_PATTERN, name):
                raise ValueError(
                    f"figure name {name[:70]!r} is not snake_case: lower case letters, digits "
                    "and underscores, starting with a letter, at most 63 characters"
                )
            checked[name] = check_figure(name, value)
        return checked


class HeartbeatAccepted(BaseModel):
    received_at: dt.datetime = Field(description="When the heartbeat arrived (server time).")
    timeout_seconds: float = Field(
        description="Seconds of silence after which the Tenant's InstanceHealthy condition "
        "turns False (`HeartbeatMissing`): beat well within it, e.g. every third of it."
    )


class InstanceReport(BaseModel):
    """The last heartbeat of a tenant's instance, as stored."""

    tenant: str
    version: str
    health: InstanceHealth
    message: str | None
    figures: dict[str, FigureValue]
    received_at: dt.datetime
    silent: bool = Field(
        description="True when no heartbeat came for longer than TENANTRY_HEARTBEAT_TIMEOUT."
    )
