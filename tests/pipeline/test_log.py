"""Logging set-up: the JSON output a log shipper reads (unit)."""

from __future__ import annotations

import json

import pytest
import structlog
from aiokafka import TopicPartition

from nexanest.pipeline.log import configure_logging, get_logger
from nexanest.pipeline.settings import LogSettings


def test_json_lines_carry_any_value(capfd: pytest.CaptureFixture[str]) -> None:
    try:
        configure_logging(LogSettings.model_validate({"level": "info", "json": True}))  # as NEXANEST_LOG__JSON=true
        get_logger("test").info(
            "partitions_assigned", partitions=[TopicPartition("ticks", 3)], error=ValueError("boom"), rows=5
        )
        line = json.loads(capfd.readouterr().err.strip().splitlines()[-1])
    finally:
        structlog.reset_defaults()
        configure_logging(LogSettings())
    assert (line["event"], line["level"], line["rows"]) == ("partitions_assigned", "info", 5)
    assert line["partitions"] == [["ticks", 3]]  # a named tuple is an array
    assert line["error"] == "ValueError('boom')"  # what JSON cannot hold, as its repr
    assert line["timestamp"].endswith("Z")
