from __future__ import annotations

import logging

import orjson

from strowger.logs import JsonFormatter, component, correlation_id, event_id


def test_log_lines_are_json_with_the_event_context() -> None:
    record = logging.makeLogRecord(
        {"name": "strowger.x", "levelname": "INFO", "msg": "handled %s", "args": ("e1",)}
    )
    record.__dict__["consumer"] = "billing"
    tokens = (correlation_id.set("corr-1"), event_id.set("e1"), component.set("billing"))
    try:
        line = orjson.loads(JsonFormatter().format(record))
    finally:
        for var, token in zip((correlation_id, event_id, component), tokens, strict=True):
            var.reset(token)
    assert line["message"] == "handled e1"
    assert (line["correlationId"], line["eventId"], line["component"]) == ("corr-1", "e1", "billing")
    assert line["consumer"] == "billing"
    assert line["level"] == "INFO"
