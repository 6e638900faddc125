"""Kafka records as aiokafka reads them from a record batch, without a ``ConsumerRecord`` each.

``getmany`` turns every record it unpacks into a ``ConsumerRecord``: a
dataclass of eleven fields built in Python, with the headers copied into a
tuple. For the ticks consumer that was the largest single cost per tick (14% of
its CPU at saturation, ``benchmarks/RESULTS.md``), for fields it never reads
(timestamp type, checksum, serialized sizes). The record aiokafka builds first,
in Cython, as it walks the (decompressed) batch already has what the consumer
reads: ``offset``, ``key``, ``value``, ``headers`` (a list of ``(str, bytes)``)
and ``timestamp``. A :class:`TickConsumer` returns those records themselves.

Everything else of ``getmany`` is aiokafka's own and unchanged: fetching,
positions, ``max_records``, the ``read_committed`` filtering of aborted
transactions and control batches, CRC checks, rebalances. Only the last step,
``PartitionRecords._consumer_record(tp, record)``, is replaced, per
``PartitionRecords`` of this consumer (never for other consumers in the
process), by an instance attribute that returns ``record`` as it is. That step
is found through aiokafka's internals (``AIOKafkaConsumer._fetcher``, the
fetcher's ``_records`` map of ``FetchResult``s and their
``_partition_records``), so aiokafka is pinned in ``constraints.txt`` and
:func:`check_internals` fails loudly at start (and in
``tests/pipeline/test_kafka_records.py``) when a new version moves them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final, Protocol

import aiokafka
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import FetchResult, PartitionRecords

from nexanest.pipeline.errors import ConfigurationError

#: The aiokafka versions whose internals this module was checked against.
SUPPORTED_AIOKAFKA: Final = ("0.14.0",)


class RawRecord(Protocol):
    """What the consumer reads of a record (aiokafka's ``DefaultRecord`` has these,
    and so has ``ConsumerRecord``, so code written against this takes either)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def _as_read(tp: object, record: object) -> object:
    """``PartitionRecords._consumer_record``'s replacement: the record as unpacked."""
    return record


def deliver_as_read(partition_records: PartitionRecords) -> None:
    """Make one of aiokafka's ``PartitionRecords`` yield its records as unpacked
    (an instance attribute shadows the method its record generator calls)."""
    partition_records._consumer_record = _as_read


class _RawFetchResults(OrderedDict[Any, Any]):
    """The fetcher's ``_records`` map (partition -> ``FetchResult`` or ``FetchError``).
    Every result it is given yields the records as unpacked."""

    def __setitem__(self, tp: Any, result: Any) -> None:
        if type(result) is FetchResult:
            deliver_as_read(result._partition_records)
        super().__setitem__(tp, result)


def check_internals() -> None:
    """Raise ``ConfigurationError`` unless aiokafka's internals are what this module
    replaces a step of: the installed version is one it was checked against, and
    the names it reaches for exist."""
    wanted = ((PartitionRecords, "_consumer_record"), (PartitionRecords, "_unpack_records"), (FetchResult, "getall"))
    missing = [f"{owner.__name__}.{name}" for owner, name in wanted if not hasattr(owner, name)]
    if aiokafka.__version__ not in SUPPORTED_AIOKAFKA or missing:
        raise ConfigurationError(
            f"pipeline.kafka_records supports aiokafka {', '.join(SUPPORTED_AIOKAFKA)} "
            f"(installed: {aiokafka.__version__}; missing: {missing or 'nothing'}): "
            "check its fetcher internals and update SUPPORTED_AIOKAFKA, or install the pinned version"
        )


class TickConsumer(AIOKafkaConsumer):  # type: ignore[misc]  # aiokafka ships no types
    """An ``AIOKafkaConsumer`` whose ``getmany`` returns :class:`RawRecord`\\ s
    (aiokafka's own record objects) instead of ``ConsumerRecord``\\ s.

    Records carry no ``topic``/``partition`` (the ``TopicPartition`` key has
    them) and their headers are a list. Deserializers are not supported: the
    values are the bytes as stored. ``start`` raises ``ConfigurationError`` when
    the installed aiokafka is not one this was checked against.
    """

    def __init__(self, *topics: str, **options: Any) -> None:
        if options.get("key_deserializer") or options.get("value_deserializer"):
            raise ValueError("TickConsumer returns raw bytes: deserializers are not supported")
        super().__init__(*topics, **options)

    async def start(self) -> None:
        check_internals()
        await super().start()
        fetcher = self._fetcher
        records = getattr(fetcher, "_records", None)
        if type(records) is not OrderedDict:
            await super().stop()
            raise ConfigurationError(f"aiokafka's fetcher keeps no _records OrderedDict (found {type(records)})")
        raw = _RawFetchResults()
        for tp, result in records.items():  # none yet, normally: the first fetch is still in flight
            raw[tp] = result
        fetcher._records = raw
