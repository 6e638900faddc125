"""The notifications service's request and response bodies.

Thresholds and prices travel as JSON strings of plain decimals (``"187.25"``),
never JSON numbers, as in the other services: a float never reaches a threshold.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from nexanest.services.notifications.conditions import Kind, State

#: The pipeline's default symbol rule (``ValidationSettings.symbol_pattern``).
SYMBOL_PATTERN: Final = r"^[A-Z0-9][A-Z0-9._:/-]{0,31}$"
#: Up to 11 integer digits and 9 decimals: the database's NUMERIC(20, 9).
DECIMAL_PATTERN: Final = r"^[0-9]{1,11}(\.[0-9]{1,9})?$"
_DECIMAL_OUT_PATTERN: Final = r"^-?[0-9]+(\.[0-9]+)?$"

DecimalIn = Annotated[str, Field(pattern=DECIMAL_PATTERN, examples=["187.25"])]
DecimalOut = Annotated[str, Field(pattern=_DECIMAL_OUT_PATTERN, examples=["187.25"])]
NoticeKind = Literal["message", "alert_fired", "webhook_disabled", "ops_alert"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlertIn(_In):
    """A price alert. ``threshold``: a price for ``crosses_above``/``crosses_below``,
    a percentage for ``moves_pct`` (with ``window_s``). ``hysteresis`` (same unit):
    after firing, the alert re-arms only once the price is back past ``threshold``
    by that much (the move below ``threshold - hysteresis``)."""

    symbol: str = Field(pattern=SYMBOL_PATTERN, examples=["AAPL"])
    kind: Kind
    threshold: DecimalIn
    hysteresis: DecimalIn = "0"
    window_s: int | None = Field(default=None, ge=1, le=86400, description="moves_pct only: the window, seconds")
    enabled: bool = True

    @model_validator(mode="after")
    def _shape(self) -> AlertIn:
        check_shape(self.kind, Decimal(self.threshold), Decimal(self.hysteresis), self.window_s)
        return self


class AlertPatch(_In):
    """Fields to change; the others stay. Changing the threshold or hysteresis, or
    enabling, sets the state again from the current price (as at creation)."""

    threshold: DecimalIn | None = None
    hysteresis: DecimalIn | None = None
    window_s: int | None = Field(default=None, ge=1, le=86400)
    enabled: bool | None = None


def check_shape(kind: Kind, threshold: Decimal, hysteresis: Decimal, window_s: int | None) -> None:
    """Raises ``ValueError`` saying what is wrong with this combination."""
    if threshold <= 0:
        raise ValueError("threshold must be greater than zero")
    if kind == "moves_pct":
        if window_s is None:
            raise ValueError("a moves_pct alert needs window_s")
        if threshold > 1000:
            raise ValueError("a moves_pct threshold is a percentage, at most 1000")
        if hysteresis >= threshold:
            raise ValueError("hysteresis must be less than the threshold")
    elif window_s is not None:
        raise ValueError("window_s is for moves_pct alerts only")
    elif kind == "crosses_above" and hysteresis >= threshold:
        raise ValueError("hysteresis must be less than the threshold (the price could never fall back past it)")


class AlertOut(BaseModel):
    id: uuid.UUID
    symbol: str
    kind: Kind
    threshold: DecimalOut
    hysteresis: DecimalOut
    window_s: int | None
    enabled: bool
    #: ``armed``: the next crossing fires; ``fired``: waiting for the price to come back.
    state: State
    fired_count: int
    last_fired_at: datetime | None
    last_fired_price: DecimalOut | None
    created_at: datetime
    updated_at: datetime


class NotificationOut(BaseModel):
    id: uuid.UUID
    kind: NoticeKind
    title: str
    body: str
    data: dict[str, str]
    alert_id: uuid.UUID | None
    created_at: datetime
    read_at: datetime | None


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    #: Pass as ``cursor`` for the next (older) page; null at the end.
    next_cursor: str | None


class WebhookIn(_In):
    url: AnyHttpUrl = Field(examples=["https://example.com/hooks/nexanest"])
    description: str = Field(default="", max_length=200)

    @field_validator("url")
    @classmethod
    def _length(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(value)) > 2048:
            raise ValueError("a URL of at most 2048 characters")
        return value

    @field_validator("description")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise ValueError("a description holds no control characters")
        return value


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    description: str
    consecutive_failures: int
    #: Set when deliveries failed too often in a row; a disabled endpoint gets nothing.
    disabled_at: datetime | None
    created_at: datetime


class WebhookCreated(WebhookOut):
    #: The signing secret, ``whsec_...``: shown this once, never again.
    secret: str


class DeliveryOut(BaseModel):
    id: uuid.UUID
    notification_id: uuid.UUID
    webhook_id: str | None
    attempts: int
    status: Literal["retrying", "delivered", "failed", "abandoned"]
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


class OpsSubscription(BaseModel):
    subscribed: bool
    event_types: list[str]
