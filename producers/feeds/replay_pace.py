"""How fast a replay goes: ``--speed``.

``--speed max`` (the default) publishes as fast as Kafka acknowledges;
``--speed 1`` at the file's original pace, ``--speed N`` N times faster, by
tick time from the first row replayed. Paced ticks go out in small groups due
together (within ``_PACE_STEP_S`` of wall time), so that pacing costs one sleep
per group rather than per tick.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Final

from nexanest.schemas.ticks import Tick

#: When paced, ticks due within this much wall time of each other go out together.
_PACE_STEP_S: Final = 0.01


def parse_speed(text: str) -> float | None:
    """``max`` -> None (as fast as possible); a positive number: times the original pace."""
    if text == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = -1.0
    if not speed > 0:
        raise argparse.ArgumentTypeError(f"--speed is max or a positive number, not {text!r}")
    return speed


class Pace:
    """Sleeps so that tick time advances ``speed`` times as fast as wall time."""

    def __init__(self, speed: float | None) -> None:
        self._speed = speed
        self._origin: tuple[int, float] | None = None

    def groups(self, ticks: list[Tick]) -> list[list[Tick]]:
        """``ticks`` cut where the next one is due more than ``_PACE_STEP_S`` of wall time later."""
        if not ticks:
            return []
        if self._speed is None:
            return [ticks]
        step_ns = _PACE_STEP_S * 1e9 * self._speed
        out: list[list[Tick]] = [[ticks[0]]]
        for tick in ticks[1:]:
            if tick.ts_ns - out[-1][0].ts_ns > step_ns:
                out.append([tick])
            else:
                out[-1].append(tick)
        return out

    async def wait(self, ts_ns: int) -> None:
        if self._speed is None:
            await asyncio.sleep(0)  # let the publisher's acknowledgements in
            return
        if self._origin is None:
            self._origin = (ts_ns, time.monotonic())
        first_ns, started = self._origin
        delay = started + (ts_ns - first_ns) / 1e9 / self._speed - time.monotonic()
        await asyncio.sleep(max(0.0, delay))
