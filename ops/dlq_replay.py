"""``nexanest dlq replay``: re-validate dead letters and re-publish what now passes.

``replay`` re-validates dead letters with the *current* rules (the
``validation`` settings it runs with) and re-publishes each one that now
passes to the ticks topic, with its original key and bytes and a header
``nexanest.replayed_from`` = ``<dead-letter topic>/<partition>/<offset>``. A
record that still fails is reported with its current reason and left where it
is: replay never writes to the dead-letter topic, so nothing can go round in a
loop. The consumer dead-letters at least once (a batch it has to re-read, after
a retry or a fence, is dead-lettered again), so one origin can appear more than
once; a run re-publishes each origin once. Run it with the validation settings the consumer runs with, or the
consumer will dead-letter the replayed ticks again.

Progress and "nothing doubled"
------------------------------
Replay reads the dead-letter topic as the consumer group
``kafka.dlq_replay_group`` and commits a partition's progress only after Kafka
has acknowledged every re-publish of the batch, so a second replay does not
re-send what the first one sent. A record counts as *examined* once a replay
that selected its reason has looked at it, whatever the outcome (re-published,
still failing, or older than ``--since``); examined records are not looked at
again.

``--reason`` limits a run to some reasons without passing over the others:
the committed offset of a partition stays where every reason has been
examined, and the reasons examined further by limited runs carry their own
next offset in the commit's metadata (a small JSON map). A later run for
other reasons, or for all, therefore still sees everything it has not
examined. ``--since T`` is different: records of the selected reasons rejected
before ``T`` are examined and passed over for good (``inspect`` still shows
them; resetting the group's offsets brings them back).

A batch is re-sent when a replay fails between Kafka's acknowledgement and the
commit (a crash, or a rebalance the commit loses), and an operator can reset
the group. Both are harmless: a replayed tick carries its original ``source``
and ``seq`` and the ``nexanest.replayed_from`` header, so the consumer looks it
up in ``stock_prices`` (rather than judging it by its partition's high-water
mark of ``seq``, which it is below) and a tick that was in fact already
ingested is not stored twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from nexanest.ops.dead_letters import (
    HEADER_REPLAYED_FROM,
    DeadLetter,
    ReplayProgress,
    parse_dead_letter,
    replay_progress,
)
from nexanest.ops.topic_reader import Progress, ProgressThrottle, topic_partitions
from nexanest.pipeline.errors import PipelineError
from nexanest.pipeline.kafka import consumer_options, make_producer, start_client
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.validation import TickValidator
from nexanest.schemas.ticks import Tick

_log = get_logger(__name__)
_STALL_TIMEOUT_S: Final = 60.0
_PASSED_OVER_SINCE: Final = "rejected before --since"
_PASSED_OVER_REPEAT: Final = "same origin as a dead letter re-published before it"


# -- replay -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StillFailing:
    letter: DeadLetter
    reason: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.letter.partition,
            "offset": self.letter.offset,
            "origin": self.letter.origin,
            "rejected_as": self.letter.reason,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass
class ReplayReport:
    dlq_topic: str
    ticks_topic: str
    dry_run: bool
    reasons: list[str] | None
    since_ns: int | None
    #: Records this run examined (re-published, still failing, or passed over).
    examined: int = 0
    #: Re-published to the ticks topic (or that would be, in a dry run), by the reason they were rejected for.
    republished: dict[str, int] = field(default_factory=dict)
    #: Rejected again by the current rules, by the current reason; left in the dead-letter topic.
    still_failing: dict[str, int] = field(default_factory=dict)
    #: The first few of those, with where they are.
    still_failing_sample: list[StillFailing] = field(default_factory=list)
    #: Examined and deliberately not re-published (too old for --since, or from another topic), by why.
    passed_over: dict[str, int] = field(default_factory=dict)
    #: Records of reasons this run did not select; a later run will see them.
    not_selected: int = 0
    #: Records read again because a run limited to other reasons stopped earlier,
    #: and skipped because an earlier replay examined them (records below the
    #: committed offset are not read at all).
    already_examined: int = 0

    @property
    def republished_total(self) -> int:
        return sum(self.republished.values())

    @property
    def still_failing_total(self) -> int:
        return sum(self.still_failing.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "dlq_topic": self.dlq_topic,
            "ticks_topic": self.ticks_topic,
            "dry_run": self.dry_run,
            "reasons": self.reasons,
            "since_ns": self.since_ns,
            "examined": self.examined,
            "republished": self.republished_total,
            "republished_by_reason": dict(sorted(self.republished.items())),
            "still_failing": self.still_failing_total,
            "still_failing_by_reason": dict(sorted(self.still_failing.items())),
            "still_failing_sample": [s.to_json() for s in self.still_failing_sample],
            "passed_over": dict(sorted(self.passed_over.items())),
            "not_selected": self.not_selected,
            "already_examined": self.already_examined,
        }


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Per owned partition: the replay progress committed so far and the end
    offset to stop at, loaded by ``_Replayer`` when it first needs them.

    aiokafka fetches for a new assignment before ``on_partitions_assigned``
    returns, so nothing is loaded here; a revocation drops the state, under
    ``lock``, which is held across judge, re-publish and commit of a batch:
    a rebalance waits until the batch in hand is committed.
    """

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.progress: dict[TopicPartition, ReplayProgress] = {}
        self.ends: dict[TopicPartition, int] = {}
        self.assigned = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            for tp in revoked:
                self.progress.pop(tp, None)
                self.ends.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned.set()


async def replay(
    settings: Settings,
    *,
    reasons: Collection[str] | None = None,
    since_ns: int | None = None,
    dry_run: bool = False,
    limit: int = 20,
    progress: Progress | None = None,
) -> ReplayReport:
    """Re-publish the dead letters that pass the current rules; see the module docstring.

    ``reasons`` selects by the reason a record was rejected for (None: all);
    ``since_ns`` passes over records rejected before it. A dry run judges the
    same records but sends and commits nothing. Reads the dead-letter topic up
    to its end offsets at the start. Raises ``ConfigurationError`` if a topic
    is missing and ``PipelineError`` if Kafka fails mid-way (what was
    acknowledged and committed before stays done).
    """
    kafka = settings.kafka
    await topic_partitions(kafka, kafka.dead_letter_topic)
    await topic_partitions(kafka, kafka.ticks_topic)
    selected = None if reasons is None else sorted(set(reasons))
    report = ReplayReport(kafka.dead_letter_topic, kafka.ticks_topic, dry_run, selected, since_ns)
    consumer = AIOKafkaConsumer(group_id=kafka.dlq_replay_group, **consumer_options(kafka, "dlq-replay"))
    assignment = _Assignment()
    consumer.subscribe([kafka.dead_letter_topic], listener=assignment)
    producer = None if dry_run else make_producer(kafka, client_suffix="dlq-replay")
    replayer = _Replayer(settings, report, consumer, producer, assignment, selected, since_ns, limit)
    try:
        if producer is not None:
            await start_client(producer, kafka)
        await start_client(consumer, kafka)
        await replayer.run(ProgressThrottle(progress))
    except KafkaError as exc:
        raise PipelineError(f"dlq replay: Kafka failed: {exc!r}") from exc
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
    _log.info(
        "dlq_replayed",
        dry_run=dry_run,
        examined=report.examined,
        republished=report.republished_total,
        still_failing=report.still_failing_total,
    )
    return report


class _Replayer:
    def __init__(
        self,
        settings: Settings,
        report: ReplayReport,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer | None,
        assignment: _Assignment,
        reasons: list[str] | None,
        since_ns: int | None,
        limit: int,
    ) -> None:
        self._kafka = settings.kafka
        self._check = TickValidator(settings.validation).check
        self._report = report
        self._consumer = consumer
        self._producer = producer
        self._assignment = assignment
        self._reasons = reasons
        self._reason_set = None if reasons is None else frozenset(reasons)
        self._since_ns = since_ns
        self._limit = limit
        #: Origins re-published by this run: a record the consumer dead-lettered twice goes out once.
        self._republished: set[tuple[str, int | None, int]] = set()

    async def run(self, throttle: ProgressThrottle) -> None:
        consumer, assignment = self._consumer, self._assignment
        last_progress = time.monotonic()
        while True:
            if assignment.assigned.is_set():
                async with assignment.lock:
                    owned = set(consumer.assignment())
                    await self._load(owned)
                    pending = {tp for tp in owned if await consumer.position(tp) < assignment.ends[tp]}
                if not pending:
                    return
                consumer.pause(*(owned - pending))
            fetched = await consumer.getmany(timeout_ms=500, max_records=5_000)
            if fetched:
                async with assignment.lock:
                    if await self._handle(fetched):
                        last_progress = time.monotonic()
                throttle(
                    f"dlq replay: {self._report.examined:,} examined, {self._report.republished_total:,} re-published"
                )
            elif time.monotonic() - last_progress > _STALL_TIMEOUT_S:
                raise PipelineError(f"dlq replay: no progress for {_STALL_TIMEOUT_S:.0f}s")

    async def _load(self, tps: set[TopicPartition]) -> None:
        """Committed progress and end offsets of partitions that do not have them yet."""
        missing = [tp for tp in tps if tp not in self._assignment.ends]
        if not missing:
            return
        committed = await replay_progress(self._kafka)
        ends = await self._consumer.end_offsets(missing)
        for tp in missing:
            self._assignment.progress[tp] = committed.get(tp.partition, ReplayProgress())
            self._assignment.ends[tp] = ends[tp]

    async def _handle(self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> bool:
        """Judge a batch, re-publish what passes, wait for the acknowledgements, then commit."""
        assignment = self._assignment
        owned = set(self._consumer.assignment())
        fetched = {tp: records for tp, records in fetched.items() if tp in owned and records}
        # Revoked since the fetch: the new owner reads those from the committed offset.
        await self._load(set(fetched))
        acks: list[asyncio.Future[Any]] = []
        advanced: dict[TopicPartition, int] = {}
        now_ns = time.time_ns()
        for tp, records in fetched.items():
            end, state = assignment.ends[tp], assignment.progress[tp]
            last = None
            for record in records:
                if record.offset >= end:
                    break
                last = record.offset
                await self._judge(parse_dead_letter(record), state, now_ns, acks)
            if last is not None:
                advanced[tp] = last + 1
        if acks:
            await asyncio.gather(*acks)
        if self._producer is None or not advanced:
            return bool(advanced)
        offsets = {}
        for tp, next_offset in advanced.items():
            state = assignment.progress[tp]
            state.advance(next_offset, self._reasons)
            offsets[tp] = OffsetAndMetadata(state.base, state.metadata())
        await self._consumer.commit(offsets)
        return True

    async def _judge(
        self, letter: DeadLetter, state: ReplayProgress, now_ns: int, acks: list[asyncio.Future[Any]]
    ) -> None:
        report = self._report
        if state.examined(letter.offset, letter.reason):
            report.already_examined += 1
            return
        if self._reason_set is not None and letter.reason not in self._reason_set:
            report.not_selected += 1
            return
        report.examined += 1
        if self._since_ns is not None and letter.rejected_at_ns < self._since_ns:
            _count(report.passed_over, _PASSED_OVER_SINCE)
            return
        if letter.source_topic != self._kafka.ticks_topic:
            _count(report.passed_over, f"from topic {letter.source_topic or '(unknown)'}")
            return
        result = self._check(letter.value, now_ns)
        if not isinstance(result, Tick):
            _count(report.still_failing, result[0])
            if len(report.still_failing_sample) < self._limit:
                report.still_failing_sample.append(StillFailing(letter, result[0], result[1]))
            return
        if letter.source_offset is not None:
            origin_key = (letter.source_topic, letter.source_partition, letter.source_offset)
            if origin_key in self._republished:
                _count(report.passed_over, _PASSED_OVER_REPEAT)
                return
            self._republished.add(origin_key)
        _count(report.republished, letter.reason)
        if self._producer is not None:
            origin = f"{self._kafka.dead_letter_topic}/{letter.partition}/{letter.offset}"
            acks.append(
                await self._producer.send(
                    self._kafka.ticks_topic,
                    value=letter.value,
                    key=letter.key,
                    headers=[*letter.original_headers, (HEADER_REPLAYED_FROM, origin.encode())],
                )
            )


def _count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


def format_replay(report: ReplayReport) -> str:
    verb = "would re-publish" if report.dry_run else "re-published"
    scope = ", ".join(report.reasons) if report.reasons else "all reasons"
    out = [f"dlq replay {report.dlq_topic} -> {report.ticks_topic} ({scope}{', dry run' if report.dry_run else ''})"]
    out.append(f"examined        {report.examined:,}")
    out.append(f"{verb:<15} {report.republished_total:,}{_breakdown(report.republished.items())}")
    out.append(f"still failing   {report.still_failing_total:,}{_breakdown(report.still_failing.items())}")
    for label, count in sorted(report.passed_over.items()):
        out.append(f"passed over     {count:,} ({label})")
    if report.not_selected:
        out.append(f"not selected    {report.not_selected:,} (other reasons; left for a later replay)")
    if report.already_examined:
        out.append(f"already done    {report.already_examined:,} (examined by an earlier replay)")
    if report.examined == 0 and report.not_selected == 0:
        out.append("nothing new since the last replay")
    if report.still_failing_sample:
        out.append("")
        out.append("still failing (left in the dead-letter topic):")
        out.extend(
            f"  {report.dlq_topic}/{s.letter.partition}/{s.letter.offset}  from {s.letter.origin}  "
            f"{s.reason}: {s.detail}"
            for s in report.still_failing_sample
        )
        if len(report.still_failing_sample) < report.still_failing_total:
            out.append(f"  ... and {report.still_failing_total - len(report.still_failing_sample):,} more")
    if report.dry_run:
        out.append("dry run: nothing sent, no progress committed")
    return "\n".join(out)


def _breakdown(items: Iterable[tuple[str, int]]) -> str:
    parts = ", ".join(f"{k}={v:,}" for k, v in sorted(items))
    return f"  ({parts})" if parts else ""
