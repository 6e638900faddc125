"""The auth database, in parameterised SQL (schemas/sql/auth/).

Every statement on ``users`` runs acting as the user it concerns
(``services/rls.py``), so that row-level security, not this module, decides
what is visible. The one exception is the login lookup, which happens before
the user is known: it goes through the owner's function ``auth_login_lookup``,
which answers for one exact email and nothing else.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import cast

import asyncpg

from nexanest.services.rls import acting_as
from nexanest.services.tokens import Role


class EmailTaken(Exception):
    """A user with this email (compared case-insensitively) exists already."""


@dataclass(frozen=True)
class LoginRecord:
    """What a login needs to know about the user an email names."""

    user_id: uuid.UUID
    password_hash: str
    role: Role
    is_active: bool


@dataclass(frozen=True)
class UserRecord:
    user_id: uuid.UUID
    email: str
    display_name: str
    role: Role
    is_active: bool
    created_at: dt.datetime


_USER_COLUMNS = "user_id, email::text AS email, display_name, role, is_active, created_at"


async def find_for_login(pool: asyncpg.Pool, email: str) -> LoginRecord | None:
    """The login facts of the user registered as ``email``, or None."""
    row = await pool.fetchrow(
        "SELECT user_id, password_hash, role, is_active FROM auth_login_lookup($1)",
        email,
    )
    if row is None:
        return None
    return LoginRecord(row["user_id"], row["password_hash"], cast(Role, row["role"]), row["is_active"])


async def create_user(
    pool: asyncpg.Pool, *, user_id: uuid.UUID, email: str, password_hash: str, display_name: str
) -> UserRecord:
    """Insert a user (role ``user``); raises ``EmailTaken``."""
    async with acting_as(pool, user_id) as conn:
        try:
            row = await conn.fetchrow(
                f"INSERT INTO users (user_id, email, password_hash, display_name) VALUES ($1, $2, $3, $4) "
                f"RETURNING {_USER_COLUMNS}",
                user_id,
                email,
                password_hash,
                display_name,
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "users_email_key":
                raise EmailTaken from None
            raise
    return _user(row)


async def get_user(pool: asyncpg.Pool, user_id: uuid.UUID) -> UserRecord | None:
    """The user ``user_id``, or None when there is no such user."""
    async with acting_as(pool, user_id) as conn:
        row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = $1", user_id)
    return None if row is None else _user(row)


async def get_credentials(pool: asyncpg.Pool, user_id: uuid.UUID) -> tuple[str, LoginRecord] | None:
    """(email, login facts) of the user ``user_id``, or None: what a password
    change checks the current password against."""
    async with acting_as(pool, user_id) as conn:
        row = await conn.fetchrow(
            "SELECT email::text AS email, password_hash, role, is_active FROM users WHERE user_id = $1", user_id
        )
    if row is None:
        return None
    return row["email"], LoginRecord(user_id, row["password_hash"], cast(Role, row["role"]), row["is_active"])


async def set_password_hash(pool: asyncpg.Pool, user_id: uuid.UUID, password_hash: str) -> bool:
    """Replace the hash of the user ``user_id``; False when there is no such user."""
    async with acting_as(pool, user_id) as conn:
        status = await conn.execute(
            "UPDATE users SET password_hash = $2, updated_at = now() WHERE user_id = $1",
            user_id,
            password_hash,
        )
    return cast(str, status) == "UPDATE 1"


def _user(row: asyncpg.Record) -> UserRecord:
    return UserRecord(
        user_id=row["user_id"],
        email=row["email"],
        display_name=row["display_name"],
        role=cast(Role, row["role"]),
        is_active=row["is_active"],
        created_at=row["created_at"],
    )
