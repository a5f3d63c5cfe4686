"""`tenantry --log-format text|json`: lines name the object or the request they are about."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import kopf
import pytest

from tenantry.api import request_id
from tenantry.cli import logs
from tenantry.operator.main import name_objects_in_logs

TENANT = kopf.Body({
    "apiVersion": "tenantry.io/v1alpha1", "kind": "Tenant",
    "metadata": {"namespace": "customers", "name": "acme", "uid": "u-1"},
})  # fmt: skip


@pytest.fixture(params=logs.FORMATS)
def written(request: pytest.FixtureRequest) -> Iterator[tuple[str, io.StringIO]]:
    """The root logger writing in one format to a buffer, as `tenantry` configures it."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logging.config.dictConfig(logs.config("INFO", request.param))
    buffer = io.StringIO()
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield request.param, buffer
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def test_operator_lines_name_their_object(written: tuple[str, io.StringIO]) -> None:
    form, buffer = written
    name_objects_in_logs()  # what `tenantry operator` does at start: keeps ours
    kopf.LocalObjectLogger(body=TENANT, settings=kopf.OperatorSettings()).info(
        "Created license Secret customers-acme/tenantry-license"
    )
    line = buffer.getvalue().strip()
    if form == "json":
        record = json.loads(line)
        assert record["kind"] == "Tenant"
        assert record["namespace"] == "customers"
        assert record["name"] == "acme"
        assert record["logger"] == "kopf.objects"
        assert record["level"] == "INFO"
        assert record["message"] == "Created license Secret customers-acme/tenantry-license"
        assert record["time"].endswith("+00:00")
        assert "settings" not in record  # kopf's own, on every object's record
    else:
        assert line.endswith(
            "INFO kopf.objects: [Tenant customers/acme] Created license Secret "
            "customers-acme/tenantry-license"
        )


def test_api_lines_carry_their_request_id(written: tuple[str, io.StringIO]) -> None:
    form, buffer = written
    request_id.label_log_records()
    token = request_id.current.set("req-7")
    try:
        logging.getLogger("tenantry.api").warning("Quota %s refused", "api_calls")
    finally:
        request_id.current.reset(token)
    logging.getLogger("tenantry.api").info("Between requests")
    first, second = buffer.getvalue().strip().splitlines()
    if form == "json":
        assert json.loads(first)["request_id"] == "req-7"
        assert json.loads(first)["message"] == "Quota api_calls refused"
        assert "request_id" not in json.loads(second)
    else:
        assert first.endswith("Quota api_calls refused [request_id=req-7]")
        assert second.endswith("tenantry.api: Between requests")


def test_context_fields_never_overwrite_the_line_itself() -> None:
    record = logging.makeLogRecord({"name": "x", "levelname": "INFO", "msg": "hello",
                                    "level": "forged", "message": "forged"})  # fmt: skip
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["level"] == "INFO"
    assert line["message"] == "hello"


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123", True), ("7f9c0e2a-0000-4000-8000-000000000000", True), ("a" * 128, True),
     ("a" * 129, False), ("", False), ("has space", False), ("x\ny", False),
     ("quote\"", False), ("ünïcode", False)],
)  # fmt: skip
def test_request_ids_are_bounded_and_safe(given: str, kept: bool) -> None:
    made = request_id.request_id(given)
    assert (made == given) is kept
    if not kept:
        assert len(made) == 32
    assert len(request_id.request_id(None)) == 32
