"""One backoff policy for every retry loop of the pipeline.

Exponential from ``RetrySettings.initial_backoff_s``, capped at
``max_backoff_s``, and jittered: each delay is drawn from the upper half of the
current step ("equal jitter"), so consumers that lost the same database at the
same moment do not all come back in the same millisecond, while a delay is
never less than half the step (a retry storm stays bounded).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from nexanest.pipeline.settings import RetrySettings


class Backoff:
    """The delays of one run of retries; ``reset`` once the step succeeded."""

    def __init__(self, settings: RetrySettings, *, uniform: Callable[[float, float], float] = random.uniform) -> None:
        self._initial = settings.initial_backoff_s
        self._max = settings.max_backoff_s
        self._uniform = uniform
        self._step = self._initial
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; doubles the step for the one after."""
        step = self._step
        self._step = min(step * 2, self._max)
        self.attempts += 1
        return self._uniform(step / 2, step)

    async def wait(self) -> float:
        """Sleep the next delay; returns it (for the log line)."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        self._step = self._initial
        self.attempts = 0
