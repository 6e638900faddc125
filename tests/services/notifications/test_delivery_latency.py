"""From a quote update to its signed webhook at a receiver, measured (integration; about 5 s).

    .venv/bin/pytest -p no:cacheprovider tests/services/notifications/test_delivery_latency.py -s

The service runs in process with its evaluator and delivery worker; the test
publishes quote updates as the consumer's quote script does (so Kafka and the
consumer are not in the figure: ``test_stream_latency.py`` of the market data
service measures that part), alternating below and above an alert's band, so
that every second update is a crossing. Latency = the receiver's arrival minus
the publish of the crossing update: evaluation, the queue, the fan-out, the
delivery job, sealing, signing and the HTTP request. Each crossing must arrive
exactly once. It prints the figures (``-s`` shows them) with the load average.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid

import pytest

from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.redis_quotes import quote_channel
from tests.services.notifications.conftest import Receiver, auth, notification_settings, running_service

pytestmark = pytest.mark.integration

CROSSINGS = 30


async def test_quote_update_to_webhook_latency(
    isolated: Settings, test_id: str, users: list[uuid.UUID], receiver: Receiver
) -> None:
    settings = notification_settings(isolated, test_id, evaluator_in_service=True, worker_in_service=True)
    alice, _ = users
    symbol = f"LT{test_id.upper()}"
    async with running_service(settings) as service:
        hook = await service.http.post("/webhooks", json={"url": receiver.url}, headers=auth(alice))
        assert hook.status_code == 201
        alert = await service.alert(alice, symbol=symbol, kind="crosses_above", threshold="100", hysteresis="0.5")
        running = service.resources["alert-evaluator"]
        deadline = time.monotonic() + 30
        while running.evaluator is None or running.evaluator.index.get(uuid.UUID(alert["id"])) is None:
            assert time.monotonic() < deadline, "the alert never reached the evaluator's index"
            await asyncio.sleep(0.02)
        channel = quote_channel(settings.redis.quote_key_prefix, symbol)
        sent: list[float] = []
        for n in range(1, CROSSINGS + 1):
            for price in ("99", "101"):
                now = time.time_ns()
                sent_at = time.perf_counter()
                await service.queue_redis.publish(channel, f"{now} {n} {price} {price} {price} 1 {now} XTST")
            sent.append(sent_at)
            deadline = time.monotonic() + 30
            while len(receiver.received) < n:
                assert time.monotonic() < deadline, f"crossing {n} never arrived"
                await asyncio.sleep(0.001)
    firings = [json.loads(r.body)["data"]["firing"] for r in receiver.received]
    assert firings == [str(n) for n in range(1, CROSSINGS + 1)]  # each once, in order
    latencies_ms = sorted((r.at - t) * 1000 for r, t in zip(receiver.received, sent, strict=True))
    p50 = statistics.median(latencies_ms)
    p90 = latencies_ms[int(0.9 * len(latencies_ms)) - 1]
    print(
        f"\nquote update -> signed webhook at the receiver, {CROSSINGS} crossings: "
        f"p50 {p50:.1f} ms, p90 {p90:.1f} ms, max {latencies_ms[-1]:.1f} ms (load average {os.getloadavg()[0]:.1f})"
    )
    assert p50 < 1000
