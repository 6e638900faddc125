"""The worker's scheduled-report step as pure bookkeeping (unit, no services):
the databases are patched out; tests/services/analytics/test_report_runs.py has
the same facts against the real ones."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from nexanest.services.analytics import runs


class _Pool:
    """Stands in for a pool whose connection is only handed to the patched listing."""

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[object]:
        yield object()


async def test_one_failing_report_is_counted_and_the_rest_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_due``'s bookkeeping: a report that fails is counted, one deleted meanwhile is not run, the rest run."""
    due = [runs.DueReport(uuid.uuid4(), uuid.uuid4(), "hourly") for _ in range(3)]
    tried: list[uuid.UUID] = []

    async def listing(conn: object, at: datetime, limit: int) -> list[runs.DueReport]:
        return due[:limit]

    async def run_one(reports_pool: object, metrics_pool: object, item: runs.DueReport, at: datetime) -> int:
        tried.append(item.report_id)
        if item is due[0]:
            raise ValueError("a definition the model refuses")
        return 0 if item is due[2] else 1  # the last one: deleted meanwhile

    monkeypatch.setattr(runs, "due_reports", listing)
    monkeypatch.setattr(runs, "_run_one", run_one)
    pool: Any = _Pool()
    result = await runs.run_due(pool, pool, at=datetime.now(UTC), limit=10)
    assert result == runs.ScheduledResult(due=3, ran=1, failed=1)
    assert tried == [d.report_id for d in due]
