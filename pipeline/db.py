"""The database's vocabulary, shared by the hot path and the operator tools:
which driver errors are worth a retry and which say the values themselves are
refused, and the exact conversions from the wire's integers to column values."""

from __future__ import annotations

import decimal
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

import asyncpg

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Errors after which the same transaction may succeed later (DATA_ERRORS below
# are the values' fault; anything else is a bug or a misconfiguration and propagates).
# A failover of a replicated TimescaleDB (deploy/local/timescale-ha.sh) shows up as
# these too: the killed primary's connections drop (InterfaceError, OSError), a
# multi-host DSN finds the dead host refused (OSError) and, until the replica is
# promoted, no host writable (TargetServerAttributeNotMatched, with
# target_session_attrs=read-write), and a member still starting refuses (CannotConnectNow).
# A connection lost in the middle of a COPY can leave asyncpg's protocol in a state
# in which the COMMIT fails with InternalClientError ("cannot switch to state 15;
# another operation is in progress", seen when the primary was killed): the pool
# discards that connection, so the retry gets a fresh one. TargetServerAttributeNotMatched
# is one of these client errors.
RETRYABLE_DB_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InternalClientError,
)

#: Errors that say "these values cannot be stored", from the server or from
#: encoding them for it: asyncpg's ``DataError`` (SQLSTATE 22, and its own
#: "invalid input for query argument"), constraint violations (23; a unique one
#: is first taken as a duplicate), an index row too large (54), and the
#: encoders' and the aggregation's own errors. Retrying cannot help, so the
#: rows at fault are isolated. Anything else (a missing table, a privilege) is
#: not about the rows and propagates.
DATA_ERRORS: Final = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    struct.error,
    UnicodeError,
    ArithmeticError,  # OverflowError, decimal's traps
    decimal.DecimalException,
)


def e9_to_decimal(value_e9: int) -> Decimal:
    return Decimal(value_e9).scaleb(-9)


def ns_to_datetime(ts_ns: int) -> datetime:
    """Exact to the microsecond (PostgreSQL's resolution), unlike a float division."""
    return _EPOCH + timedelta(microseconds=ts_ns // 1000)
