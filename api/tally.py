"""The counts /metrics shows, kept by the services that count them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Tally:
    """Per process: events and quota decisions since start-up."""

    events_accepted: int = 0
    events_duplicate: int = 0
    events_rejected: int = 0
    quota_admitted: int = 0
    quota_refused: int = 0
    counted_in_database: int = 0
