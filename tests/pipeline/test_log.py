"""Logging: the JSON lines a log shipper reads (unit). Tests the renderer as
``configure_logging`` builds it, without reconfiguring the process's logging."""

from __future__ import annotations

import json

import structlog
from aiokafka import TopicPartition

from nexanest.pipeline.log import _json_line


def test_json_lines_carry_any_value() -> None:
    # structlog's JSONRenderer hands the serializer json.dumps keywords (default=...),
    # which msgspec alone refused: NEXANEST_LOG__JSON=true crashed at the first line.
    render = structlog.processors.JSONRenderer(serializer=_json_line)
    event = {"event": "partitions_assigned", "partitions": [TopicPartition("ticks", 3)], "error": ValueError("boom")}
    line = json.loads(render(None, "info", event))
    assert line["event"] == "partitions_assigned"
    assert line["partitions"] == [["ticks", 3]]  # a named tuple is an array
    assert line["error"] == "ValueError('boom')"  # what JSON cannot hold, as its repr
