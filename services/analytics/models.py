"""The analytics service's request and response bodies.

Metric values are JSON numbers: they are doubles by nature (ratios, returns,
volatilities; ``metrics.py`` states their precision), unlike the portfolio
service's money, which travels as decimal strings.

A saved report's ``definition`` is a ``ReportQuery``: which subjects (the
caller's portfolios, or symbols), which metrics and which windows; the service
validates it here before it is stored as JSONB, and a report runs it against
the latest metrics.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nexanest.services.analytics.metrics import PORTFOLIO_METRICS, SYMBOL_METRICS, WINDOWS, SubjectKind, WindowName

#: The pipeline's default symbol rule (``ValidationSettings.symbol_pattern``).
SYMBOL_PATTERN: Final = r"^[A-Z0-9][A-Z0-9._:/-]{0,31}$"
MetricName = Literal[
    "return", "volatility", "max_drawdown", "sharpe", "beta", "realised_volatility", "vwap", "avg_spread"
]
Schedule = Literal["hourly", "daily", "weekly"]
Symbol = Annotated[str, Field(pattern=SYMBOL_PATTERN, examples=["SYN0001"])]


class MetricsOut(BaseModel):
    """The latest metrics of a subject: ``metrics[window][metric]``. A metric whose
    inputs do not suffice in a window (too short a history, no benchmark, no
    quotes) is absent, never 0."""

    subject_kind: SubjectKind
    subject_id: str
    #: The end of the windows; None when nothing was computed yet.
    as_of: datetime | None
    metrics: dict[WindowName, dict[MetricName, float]]


class MetricPoint(BaseModel):
    time: datetime
    metric: MetricName
    window: WindowName
    value: float


class MetricHistoryOut(BaseModel):
    subject_kind: SubjectKind
    subject_id: str
    #: The range asked for: from inclusive, to exclusive.
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    points: list[MetricPoint]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportQuery(_In):
    """What a report shows: ``metrics`` over ``windows`` of each subject. Portfolio
    subjects are portfolio ids (only the caller's are ever shown), symbol
    subjects are symbols. Empty ``metrics`` or ``windows`` mean all of them."""

    subject_kind: SubjectKind
    subject_ids: list[str] = Field(min_length=1, max_length=50)
    metrics: list[MetricName] = Field(default_factory=list, max_length=8)
    windows: list[WindowName] = Field(default_factory=list, max_length=5)

    @model_validator(mode="after")
    def _consistent(self) -> ReportQuery:
        for subject in self.subject_ids:
            if self.subject_kind == "portfolio":
                try:
                    uuid.UUID(subject)
                except ValueError:
                    raise ValueError("a portfolio subject is a portfolio id (a UUID)") from None
            elif not _matches_symbol(subject):
                raise ValueError("a symbol subject is a symbol: upper case letters, digits and ._:/-")
        allowed = PORTFOLIO_METRICS if self.subject_kind == "portfolio" else SYMBOL_METRICS
        wrong = sorted(set(self.metrics) - set(allowed))
        if wrong:
            raise ValueError(f"not {self.subject_kind} metrics: {', '.join(wrong)} (those are {', '.join(allowed)})")
        if len(set(self.subject_ids)) != len(self.subject_ids):
            raise ValueError("a subject is listed twice")
        return self

    def metric_names(self) -> tuple[str, ...]:
        allowed = PORTFOLIO_METRICS if self.subject_kind == "portfolio" else SYMBOL_METRICS
        return tuple(self.metrics) or allowed

    def window_names(self) -> tuple[str, ...]:
        return tuple(self.windows) or tuple(WINDOWS)


def _matches_symbol(value: str) -> bool:
    return re.fullmatch(SYMBOL_PATTERN, value) is not None


class ReportIn(_In):
    name: str = Field(min_length=1, max_length=100, examples=["Morning risk"])
    definition: ReportQuery
    #: None: on demand only.
    schedule: Schedule | None = None

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.strip() or not value.isprintable():
            raise ValueError("a name needs a visible character and no control characters")
        return value


class ReportOut(BaseModel):
    id: uuid.UUID
    name: str
    definition: ReportQuery
    schedule: Schedule | None
    created_at: datetime
    updated_at: datetime


class ReportRun(BaseModel):
    """A report run now: the latest metrics of each of its subjects that exist
    (for portfolios: that are the caller's); ``missing`` lists the others."""

    report_id: uuid.UUID
    results: list[MetricsOut]
    missing: list[str]


class StoredRun(BaseModel):
    """A scheduled run of a report, as the worker stored it: ``result`` is what
    ``GET /analytics/reports/{id}/run`` answered at ``ran_at`` (the round's time)."""

    ran_at: datetime
    result: ReportRun
