"""What each kind of data is kept for: one rule per table or continuous
aggregate, from ``settings.retention`` and the edition (which tables exist).
Both ways of enforcing it read these rules: ``maintain`` (drop_chunks) and
``maintain_policies`` (native policies)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from nexanest.pipeline.edition import Edition
from nexanest.pipeline.settings import RetentionSettings


@dataclass(frozen=True, slots=True)
class RetentionRule:
    relation: str  # a hypertable, or a continuous aggregate on the community edition
    label: str
    keep: timedelta | None  # None: forever
    #: The relation a continuous aggregate is refreshed from (its window must end
    #: before that relation's retention); None for plain tables.
    source: str | None = None


def retention_rules(r: RetentionSettings, edition: Edition) -> list[RetentionRule]:
    """One rule per table the pipeline writes, in the order maintain treats them."""

    def keep(days: float) -> timedelta | None:
        return timedelta(days=days) if days > 0 else None

    if edition == "apache":  # rollup tables the consumer keeps, independent of the raw ticks
        bars = [
            RetentionRule(f"ohlcv_{res}_rollup", f"{res} bars", keep(days))
            for res, days in (
                ("1m", r.bars_1m_days),
                ("5m", r.bars_5m_days),
                ("1h", r.bars_1h_days),
                ("1d", r.bars_1d_days),
            )
        ]
    else:  # hierarchical continuous aggregates: each refreshes from the level below
        bars = [
            RetentionRule("ohlcv_1m_cagg", "1m bars", keep(r.bars_1m_days), source="stock_prices"),
            RetentionRule("ohlcv_5m_cagg", "5m bars", keep(r.bars_5m_days), source="ohlcv_1m_cagg"),
            RetentionRule("ohlcv_1h_cagg", "1h bars", keep(r.bars_1h_days), source="ohlcv_5m_cagg"),
            RetentionRule("ohlcv_1d_cagg", "1d bars", keep(r.bars_1d_days), source="ohlcv_1h_cagg"),
        ]
    return [
        RetentionRule("stock_prices", "raw ticks", keep(r.raw_ticks_days)),
        *bars,
        RetentionRule("market_indices", "market indices", keep(r.market_indices_days)),
        RetentionRule("system_events", "system events", keep(r.system_events_days)),
    ]
