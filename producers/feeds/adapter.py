"""The feed adapter interface (issue 14): what every source of ticks implements.

An adapter owns only what is particular to its venue or file: how to connect,
subscribe, parse and reconnect. Everything shared lives once elsewhere:
normalisation (``producers/normalise.py``), and the publisher side
(``producers/publisher.py``: batching, keys, idempotent produce,
backpressure) with the observer that turns an adapter's reports into metrics
and ``system_events`` (``producers/observer.py``).

The life of an adapter, as ``nexanest feed run`` drives it::

    await adapter.start(observer)         # connect / open; reports through the observer
    async for batch in adapter.ticks():   # normalised ticks, in venue order
        await publisher.publish(batch)    # blocks while Kafka is slow: backpressure
    await adapter.stop()                  # idempotent; ends ``ticks()`` when called from elsewhere

Adapters are found through the ``nexanest.feeds`` entry point group: each entry
point names a ``FeedPlugin`` (``producers/feeds/registry.py``), so a user's
own package adds a feed without editing the project, and the built-in feeds
are registered the same way in ``pyproject.toml``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from nexanest.schemas.ticks import Tick

if TYPE_CHECKING:
    from nexanest.pipeline.settings import Settings


@dataclass(slots=True)
class FeedHealth:
    """A snapshot of an adapter's state, for ``nexanest feed run``'s status line."""

    connected: bool = False
    ticks: int = 0  #: normalised ticks yielded
    rejected: int = 0  #: frames/rows that could not become a tick (counted, sampled in the log)
    reconnects: int = 0
    gaps: int = 0  #: sequence gaps seen at the venue
    last_tick_ns: int | None = None
    detail: str = ""  #: human text for ``nexanest feed run`` / status


class FeedObserver(Protocol):
    """What an adapter reports besides ticks.

    The publisher side turns these into metrics (``nexanest_feed_*``, labelled
    by the adapter's name only: no symbol or venue-instance labels, whose count
    would grow without bound) and ``system_events``. Calls are rare (not per
    tick), so they may await I/O; an adapter never needs to handle their errors.
    """

    async def connected(self, detail: str) -> None:
        """The adapter is connected (or a file is open) and ticks can flow."""

    async def disconnected(self, reason: str) -> None:
        """The connection was lost or closed; a reconnect, if any, follows."""

    async def gap(self, stream: str, expected: int, received: int) -> None:
        """The venue's sequence on ``stream`` jumped: ``expected`` was next, ``received`` came."""

    async def malformed(self, reason: str, sample: str) -> None:
        """A frame or row could not become a tick. ``sample`` is the raw input;
        the observer truncates it before logging."""


class TickSource(Protocol):
    """Anything that yields batches of ticks: all the publisher needs."""

    def ticks(self) -> AsyncIterator[Sequence[Tick]]:
        """Yield ticks in batches, in the order the venue sent them; end when
        the source is finished or stopped."""


class FeedAdapter(TickSource, Protocol):
    """A source of ticks with a life cycle: an exchange connection, a file replay, a simulator."""

    #: Registry name: ``nexanest feed run NAME``; also the ``adapter`` metric label.
    name: ClassVar[str]
    #: Recorded in ``Tick.exchange`` unless the venue gives one per tick.
    venue: ClassVar[str]

    async def start(self, observer: FeedObserver) -> None:
        """Connect or open; keep ``observer`` for reports. Called once, before ``ticks()``."""

    async def stop(self) -> None:
        """Ask ``ticks()`` to end soon (after the batch in hand); idempotent."""

    def health(self) -> FeedHealth:
        """The current state; cheap, called by status displays."""


class FeedPlugin(Protocol):
    """What a ``nexanest.feeds`` entry point loads: the adapter's factory and its options."""

    name: str
    summary: str  #: one line for ``nexanest feed list``

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the adapter's options to ``nexanest feed run NAME``."""

    def create(self, args: argparse.Namespace, settings: Settings) -> FeedAdapter:
        """Build the adapter from the parsed options and the project's settings."""


class NullObserver:
    """An observer that ignores every report: for tests and library use without metrics."""

    async def connected(self, detail: str) -> None:
        return None

    async def disconnected(self, reason: str) -> None:
        return None

    async def gap(self, stream: str, expected: int, received: int) -> None:
        return None

    async def malformed(self, reason: str, sample: str) -> None:
        return None


class Acknowledging(Protocol):
    """Optional: an adapter that wants to know what Kafka has acknowledged (a file
    replay moves its checkpoint there). The feed runner awaits ``acknowledged``
    with each batch once every tick of it is acknowledged, in the order yielded."""

    async def acknowledged(self, ticks: Sequence[Tick]) -> None: ...


def is_backfill(adapter: object) -> bool:
    """Whether ``adapter`` publishes history (optional ``backfill: ClassVar[bool]``,
    default False): its ticks then go to ``kafka.backfill_topic``, which the consumer
    reads without the ``stale_timestamp`` rule."""
    return bool(getattr(adapter, "backfill", False))
