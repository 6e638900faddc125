"""The alert evaluator: follows the quote updates and fires alerts as prices cross.

The consumer's quote script PUBLISHes every quote it moves forward on
``<quote prefix>updates:<SYMBOL>`` (``pipeline/sinks/redis_quotes.py``), as the
market-data stream follows them (``services/market_data/hub.py``). The evaluator
pattern-subscribes to all of them on one pub/sub connection and keeps an
in-memory index of the enabled alerts by symbol, so a quote of a symbol without
alerts costs one dictionary miss, and only the alerts of the quote's symbol are
evaluated (``conditions.py``). Nothing polls the alerts.

The index is read at start through ``notification_alerts_to_evaluate()``
(notifications/0002), again every ``index_refresh_s``, and one alert at a time
when the API announces a change on ``<key prefix>alerts-changed``
(``announce_change``). After a lost pub/sub connection it is read again, since
changes may have been missed; quotes published while it was down are not seen
(the next quote of the symbol is evaluated as usual).

**Firing.** The n-th firing of an alert is the notice ``alert_notification_id(alert,
n)``: the evaluator first queues its ``Fanout`` job, then stores the alert as
fired with ``fired_count = n`` (as the alert's user). A crash in between leaves
the alert armed, so the evaluator that follows may fire it again: as the same
notice, which the worker delivers once to the inbox and with the same
``webhook-id``. A crash after it leaves the state stored: a restart does not fire
again. Re-arming is stored the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import asyncpg
import redis.asyncio as redis

from nexanest.pipeline import metrics
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.retry import Backoff
from nexanest.pipeline.settings import RetrySettings, Settings
from nexanest.pipeline.sinks.redis_quotes import RETRYABLE_REDIS_ERRORS, quote_channel
from nexanest.services.app import Resource
from nexanest.services.background import logging_failure
from nexanest.services.notifications import repository
from nexanest.services.notifications.conditions import PriceWindow, Rule, State, step
from nexanest.services.notifications.jobs import Fanout, Notice, alert_notification_id, encode_job
from nexanest.services.notifications.queue import JobQueue
from nexanest.services.resources import postgres_pool
from nexanest.services.rls import acting_as

_log = get_logger("nexanest.services.notifications.evaluator")
_POLL_S: Final = 1.0
#: The waits between reconnection attempts: from 0.1 s up to 5 s, jittered so that
#: evaluators that lost Redis together do not all come back at once.
_RECONNECT: Final = RetrySettings(initial_backoff_s=0.1, max_backoff_s=5.0)


def changes_channel(key_prefix: str) -> str:
    """The channel on which the API announces ``<user id> <alert id>`` of a changed alert."""
    return f"{key_prefix}alerts-changed"


async def announce_change(client: redis.Redis, key_prefix: str, user_id: uuid.UUID, alert_id: uuid.UUID) -> None:
    await client.publish(changes_channel(key_prefix), f"{user_id} {alert_id}")


def plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros (``"187.25"``)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(slots=True)
class LiveAlert:
    """An enabled alert as the evaluator holds it; ``state`` and ``fired_count``
    follow what it stores."""

    alert_id: uuid.UUID
    user_id: uuid.UUID
    symbol: str
    rule: Rule
    state: State
    fired_count: int

    @classmethod
    def of(cls, row: asyncpg.Record) -> LiveAlert:
        rule = Rule(row["kind"], row["threshold"], row["hysteresis"], row["window_s"])
        return cls(row["alert_id"], row["user_id"], row["symbol"], rule, row["state"], row["fired_count"])


class AlertIndex:
    """The enabled alerts by symbol, and the price windows their ``moves_pct``
    alerts need (one per symbol and window length, kept while some alert needs it)."""

    def __init__(self) -> None:
        self.by_symbol: dict[str, list[LiveAlert]] = {}
        self._by_id: dict[uuid.UUID, LiveAlert] = {}
        self.windows: dict[str, dict[int, PriceWindow]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, alert_id: uuid.UUID) -> LiveAlert | None:
        return self._by_id.get(alert_id)

    def replace_all(self, alerts: Iterable[LiveAlert]) -> None:
        self.by_symbol, self._by_id = {}, {}
        for alert in alerts:
            self._add(alert)
        self._prune_windows()

    def upsert(self, alert: LiveAlert) -> None:
        self._remove(alert.alert_id)
        self._add(alert)
        self._prune_windows()

    def remove(self, alert_id: uuid.UUID) -> None:
        self._remove(alert_id)
        self._prune_windows()

    def _add(self, alert: LiveAlert) -> None:
        self._by_id[alert.alert_id] = alert
        self.by_symbol.setdefault(alert.symbol, []).append(alert)
        if alert.rule.window_s is not None:
            self.windows.setdefault(alert.symbol, {}).setdefault(alert.rule.window_s, PriceWindow(alert.rule.window_s))

    def _remove(self, alert_id: uuid.UUID) -> None:
        old = self._by_id.pop(alert_id, None)
        if old is None:
            return
        remaining = [a for a in self.by_symbol.get(old.symbol, []) if a.alert_id != alert_id]
        if remaining:
            self.by_symbol[old.symbol] = remaining
        else:
            self.by_symbol.pop(old.symbol, None)

    def _prune_windows(self) -> None:
        needed = {(a.symbol, a.rule.window_s) for a in self._by_id.values() if a.rule.window_s is not None}
        for symbol in list(self.windows):
            kept = {w: pw for w, pw in self.windows[symbol].items() if (symbol, w) in needed}
            if kept:
                self.windows[symbol] = kept
            else:
                del self.windows[symbol]


class Evaluator:
    """Evaluates quotes against ``index`` and fires through ``queue``; stores state
    changes in ``pool`` (the notifications database, as each alert's user)."""

    def __init__(self, pool: asyncpg.Pool, queue: JobQueue, index: AlertIndex | None = None) -> None:
        self._pool = pool
        self._queue = queue
        self.index = index or AlertIndex()

    async def load_all(self) -> None:
        rows = await repository.alerts_to_evaluate(self._pool)
        self.index.replace_all(LiveAlert.of(r) for r in rows)
        _log.info("alert_index_loaded", alerts=len(self.index), symbols=len(self.index.by_symbol))

    async def load_one(self, user_id: uuid.UUID, alert_id: uuid.UUID) -> None:
        async with acting_as(self._pool, user_id) as conn:
            row = await repository.get_alert(conn, alert_id)
        if row is None or not row["enabled"]:
            self.index.remove(alert_id)
        else:
            self.index.upsert(LiveAlert.of(row))

    async def on_quote(self, symbol: str, ts_ns: int, price: Decimal) -> None:
        """Evaluate the alerts of ``symbol`` at ``price`` (the tick of ``ts_ns``)."""
        alerts = self.index.by_symbol.get(symbol)
        if not alerts:
            return
        windows = self.index.windows.get(symbol)
        if windows:
            for window in windows.values():
                window.add(ts_ns, price)
        for alert in list(alerts):
            move = None
            if alert.rule.window_s is not None and windows:
                move = windows[alert.rule.window_s].move_pct(price)
            transition = step(alert.rule, alert.state, price, move)
            if transition == "fire":
                await self._fire(alert, ts_ns, price, move)
            elif transition == "rearm":
                await self._rearm(alert)

    async def _fire(self, alert: LiveAlert, ts_ns: int, price: Decimal, move: Decimal | None) -> None:
        firing = alert.fired_count + 1
        rule = alert.rule
        data = {
            "symbol": alert.symbol,
            "condition": rule.kind,
            "threshold": plain(rule.threshold),
            "price": plain(price),
            "tick_ts_ns": str(ts_ns),
            "firing": str(firing),
        }
        if rule.kind == "moves_pct":
            data["move_pct"] = plain(round(move or Decimal(0), 4))
            data["window_s"] = str(rule.window_s)
            title = f"{alert.symbol} moved {data['move_pct']}% within {rule.window_s}s"
        else:
            side = "above" if rule.kind == "crosses_above" else "below"
            title = f"{alert.symbol} crossed {side} {data['threshold']}"
        notice = Notice(
            notification_id=alert_notification_id(alert.alert_id, firing),
            user_id=alert.user_id,
            kind="alert_fired",
            title=title,
            body=f"{alert.symbol} traded at {data['price']} (your alert: {rule.kind} {data['threshold']}).",
            created_ns=ts_ns,
            data=data,
            alert_id=alert.alert_id,
        )
        await self._queue.push(encode_job(Fanout(notice)))
        alert.state, alert.fired_count = "fired", firing
        metrics.NOTIFICATIONS_ALERTS_FIRED.inc()
        _log.info("alert_fired", alert_id=str(alert.alert_id), firing=firing)
        try:
            async with acting_as(self._pool, alert.user_id) as conn:
                stored = await repository.record_firing(
                    conn, alert.alert_id, firing, price, datetime.fromtimestamp(ts_ns / 1e9, UTC)
                )
        except (OSError, asyncpg.PostgresError) as exc:
            # Queued already: a later evaluator that fires it again sends the same notice.
            _log.warning("alert_state_not_stored", alert_id=str(alert.alert_id), error=type(exc).__name__)
            return
        if not stored:
            _log.info("alert_changed_meanwhile", alert_id=str(alert.alert_id))

    async def _rearm(self, alert: LiveAlert) -> None:
        alert.state = "armed"
        try:
            async with acting_as(self._pool, alert.user_id) as conn:
                await repository.record_rearm(conn, alert.alert_id, alert.fired_count)
        except (OSError, asyncpg.PostgresError) as exc:
            _log.warning("alert_state_not_stored", alert_id=str(alert.alert_id), error=type(exc).__name__)

    async def follow(
        self, client: redis.Redis, *, quote_prefix: str, key_prefix: str, refresh_s: float, stop: asyncio.Event
    ) -> None:
        """Follow the quote updates and alert changes on ``client`` until ``stop``."""
        updates = quote_channel(quote_prefix, "").encode()
        changes = changes_channel(key_prefix).encode()
        pubsub = client.pubsub()
        backoff = Backoff(_RECONNECT)
        next_refresh = float("inf")
        try:
            await pubsub.psubscribe(updates + b"*")
            await pubsub.subscribe(changes)
            while not stop.is_set():
                try:
                    message: dict[str, Any] | None = await pubsub.get_message(timeout=_POLL_S)
                except RETRYABLE_REDIS_ERRORS as exc:
                    delay = backoff.next_delay()
                    _log.warning("evaluator_disconnected", error=type(exc).__name__, retry_in_s=round(delay, 3))
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                if time.monotonic() >= next_refresh:
                    next_refresh = await self._reload(refresh_s)
                if message is None:
                    continue
                try:
                    kind = message["type"]
                    if kind == "pmessage":
                        await self._on_update(message["channel"][len(updates) :], message["data"])
                    elif kind == "message":
                        user_id, alert_id = message["data"].decode().split(" ")
                        await self.load_one(uuid.UUID(user_id), uuid.UUID(alert_id))
                    elif kind == "subscribe":  # the changes channel, at start and after every reconnect
                        next_refresh = await self._reload(refresh_s)
                except Exception as exc:  # noqa: BLE001 - one bad message or a store away must not stop evaluation
                    _log.error("evaluator_message_failed", error=type(exc).__name__, exc_info=exc)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call] # redis-py leaves it unannotated

    async def _reload(self, refresh_s: float) -> float:
        try:
            await self.load_all()
        except (OSError, asyncpg.PostgresError) as exc:
            _log.warning("alert_index_not_loaded", error=type(exc).__name__)
            return time.monotonic() + min(refresh_s, 5.0)
        return time.monotonic() + refresh_s

    async def _on_update(self, symbol: bytes, data: bytes) -> None:
        name = symbol.decode()
        if name not in self.index.by_symbol:
            return
        # <ts_ns> <seq> <price> ...: only the first and third fields are needed here.
        fields = data.split(b" ", 3)
        try:
            ts_ns, price = int(fields[0]), Decimal(fields[2].decode())
        except (IndexError, ValueError, InvalidOperation):
            _log.warning("quote_update_unreadable", symbol=name, bytes=len(data))
            return
        await self.on_quote(name, ts_ns, price)


@dataclass
class Running:
    """An evaluator running in a task: ``evaluator`` is set once it is built."""

    task: asyncio.Task[None] | None = None
    evaluator: Evaluator | None = None


async def run_evaluator(settings: Settings, *, stop: asyncio.Event, running: Running | None = None) -> None:
    """The evaluator on connections of its own, until ``stop`` is set (``running``,
    when given, is told the evaluator it built)."""
    n, r = settings.notifications, settings.redis
    queue_client = redis.Redis.from_url(
        r.url.get_secret_value(), db=r.db_notifications, socket_timeout=r.socket_timeout_s
    )
    pubsub_client = redis.Redis.from_url(
        r.url.get_secret_value(),
        db=r.db_quotes,
        socket_timeout=r.socket_timeout_s,
        socket_connect_timeout=r.socket_timeout_s,
        health_check_interval=10,
        client_name=f"nexanest-notifications-evaluator-{uuid.uuid4().hex[:8]}",
    )
    try:
        async with postgres_pool("evaluator-db", settings.services.notifications_dsn, max_size=2).open() as pool:
            evaluator = Evaluator(pool, JobQueue(queue_client, n.key_prefix))
            if running is not None:
                running.evaluator = evaluator
            await evaluator.follow(
                pubsub_client,
                quote_prefix=r.quote_key_prefix,
                key_prefix=n.key_prefix,
                refresh_s=n.index_refresh_s,
                stop=stop,
            )
    finally:
        await pubsub_client.aclose()
        await queue_client.aclose()


def evaluator_resource(settings: Settings, *, name: str = "alert-evaluator") -> Resource[Running]:
    """The evaluator inside the service: started and stopped with the app;
    ``/readyz`` checks that it still runs."""

    @asynccontextmanager
    async def open_evaluator() -> AsyncIterator[Running]:
        stop = asyncio.Event()
        running = Running()
        work = logging_failure(run_evaluator(settings, stop=stop, running=running), log=_log)
        task = asyncio.create_task(work, name="alert-evaluator")
        running.task = task
        try:
            yield running
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)

    async def check(running: Running) -> None:
        if running.task is None or running.task.done():
            raise RuntimeError("the alert evaluator has stopped")

    return Resource(name, open_evaluator, check)
