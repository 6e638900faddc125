"""structlog, configured once per process.

Filtering bound loggers make disabled levels free, and the logger is cached on
first use. The hot path logs per batch, never per tick.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog

from nexanest.pipeline.settings import LogSettings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _json_line(event: Any, **_json_dumps_options: Any) -> bytes:
    """structlog's JSONRenderer calls its serializer like ``json.dumps`` (with a
    ``default=`` hook msgspec does not take); values msgspec cannot encode
    (a TopicPartition, an exception) are written as their ``repr``."""
    return msgspec.json.encode(event, enc_hook=repr)


def configure_logging(settings: LogSettings) -> None:
    level = _LEVELS[settings.level]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if settings.json_output:
        structlog.configure(
            processors=[*shared, structlog.processors.JSONRenderer(serializer=_json_line)],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.BytesLoggerFactory(file=sys.stderr.buffer),
            cache_logger_on_first_use=True,
        )
    else:
        structlog.configure(
            processors=[*shared, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=True,
        )
    # aiokafka logs through the standard library; keep it at warnings and above.
    logging.basicConfig(
        level=max(level, logging.WARNING), stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
