"""User sessions: opaque access tokens whose hash is kept in Redis.

The auth service creates a session at login and hands out its token; every
service verifies a token with ``Sessions.verify`` (a ``TokenVerifier``) straight
against Redis, without an HTTP hop. Unlike a signed token, a session ends the
moment it is revoked (logout, password change).

Redis holds, under ``key_prefix`` (database ``settings.redis.db_sessions``):

- ``<prefix>:session:<sha256 of the token, hex>``: a hash of ``user_id``,
  ``role``, ``idle_until_ms`` and ``absolute_at_ms``, expiring with the session;
- ``<prefix>:user-sessions:<user id>``: a sorted set of the user's session
  hashes scored by their absolute expiry, so that all of a user's sessions are
  revoked at once (``revoke_all_of_user``).

The token itself is never stored: whoever reads Redis cannot use what they
read. Looking a token up by its SHA-256 also means the lookup compares hashes,
so the time it takes says nothing about how much of a guessed token was right;
no other comparison involves a secret. A token is 256 random bits, so a fast
unsalted hash is enough (a password hash would only slow every request down).

A session ends at whichever comes first: ``idle_s`` after its last successful
``verify``, or ``absolute_s`` after it was created. Both are judged by
``clock`` (tests inject one) and mirrored in the key's Redis TTL, which removes
what nobody asks about any more.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast, get_args

import redis.asyncio as redis

from nexanest.pipeline.settings import Settings
from nexanest.services.app import Resource
from nexanest.services.resources import redis_client_now
from nexanest.services.tokens import Identity, InvalidToken, Role

#: secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_TOKEN_BYTES: Final = 32

# Verify and refresh as one step: a session revoked meanwhile must not be
# written back by the refresh. KEYS[1]: the session; ARGV: now_ms, idle_ms.
# Answers nil (no such session), 0 (expired: removed now) or
# {user_id, role, new idle_until_ms}.
_VERIFY = """
local f = redis.call('HMGET', KEYS[1], 'user_id', 'role', 'idle_until_ms', 'absolute_at_ms')
if not f[1] then return nil end
local now = tonumber(ARGV[1])
local idle_until = tonumber(f[3])
local absolute_at = tonumber(f[4])
if now >= idle_until or now >= absolute_at then
  redis.call('DEL', KEYS[1])
  return 0
end
local until_ms = math.min(now + tonumber(ARGV[2]), absolute_at)
redis.call('HSET', KEYS[1], 'idle_until_ms', string.format('%d', until_ms))
redis.call('PEXPIRE', KEYS[1], until_ms - now)
return {f[1], f[2], until_ms}
"""

# KEYS[1]: the session. ARGV: the prefix of the user-sessions keys, the session's hash.
_REVOKE = """
local user_id = redis.call('HGET', KEYS[1], 'user_id')
if not user_id then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. user_id, ARGV[2])
return 1
"""

# KEYS[1]: the user's set of sessions. ARGV[1]: the prefix of session keys.
_REVOKE_ALL = """
local hashes = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, h in ipairs(hashes) do redis.call('DEL', ARGV[1] .. h) end
redis.call('DEL', KEYS[1])
return #hashes
"""


@dataclass(frozen=True)
class NewSession:
    """A session just created: the token to hand to the client (once; it is
    not kept), and what ``verify`` would answer for it now."""

    token: str
    identity: Identity
    #: Seconds until the session ends if the token is not used (its idle time,
    #: or less when the absolute expiry comes first).
    expires_in_s: int


class Sessions:
    """Sessions in Redis; a ``TokenVerifier`` (``services/tokens.py``).

    ``client`` is a Redis client on the sessions database, returning bytes (the
    default). Every method is one round trip to Redis and atomic there; Redis
    errors propagate (a route then fails with 500, never lets a request in).
    Raises ``ValueError`` when ``idle_s`` or ``absolute_s`` is not positive.
    """

    def __init__(
        self,
        client: redis.Redis,
        idle_s: float,
        absolute_s: float,
        *,
        key_prefix: str = "auth",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if idle_s <= 0 or absolute_s <= 0:
            raise ValueError(f"idle_s and absolute_s must be positive, not {idle_s} and {absolute_s}")
        self._client = client
        self._idle_ms = math.ceil(idle_s * 1000)
        self._absolute_ms = math.ceil(absolute_s * 1000)
        self._session_prefix = f"{key_prefix}:session:"
        self._user_prefix = f"{key_prefix}:user-sessions:"
        self._clock = clock
        self._verify = client.register_script(_VERIFY)
        self._revoke = client.register_script(_REVOKE)
        self._revoke_all = client.register_script(_REVOKE_ALL)

    @classmethod
    def from_settings(
        cls,
        client: redis.Redis,
        settings: Settings,
        *,
        key_prefix: str = "auth",
        clock: Callable[[], float] = time.time,
    ) -> Sessions:
        s = settings.services
        return cls(client, s.session_idle_s, s.session_absolute_s, key_prefix=key_prefix, clock=clock)

    async def create(self, user_id: uuid.UUID, role: Role) -> NewSession:
        """A new session of ``user_id`` acting as ``role``. The user's other
        sessions stay as they are; those already past their absolute expiry are
        dropped from the user's set."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        digest = _digest(token)
        now_ms = self._now_ms()
        absolute_at_ms = now_ms + self._absolute_ms
        idle_until_ms = min(now_ms + self._idle_ms, absolute_at_ms)
        session_key = self._session_prefix + digest
        user_key = self._user_prefix + str(user_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(
                session_key,
                mapping={
                    "user_id": str(user_id),
                    "role": role,
                    "idle_until_ms": idle_until_ms,
                    "absolute_at_ms": absolute_at_ms,
                },
            )
            pipe.pexpire(session_key, idle_until_ms - now_ms)
            pipe.zremrangebyscore(user_key, "-inf", now_ms)
            pipe.zadd(user_key, {digest: absolute_at_ms})
            # The newest session expires last: the set lives as long as it.
            pipe.pexpire(user_key, self._absolute_ms)
            await pipe.execute()
        identity = Identity(user_id=user_id, expires_at_s=idle_until_ms // 1000, role=role)
        return NewSession(token=token, identity=identity, expires_in_s=(idle_until_ms - now_ms) // 1000)

    async def verify(self, token: str) -> Identity:
        """The identity of the session ``token`` opens, whose idle expiry moves
        to ``idle_s`` from now (never past the absolute one). Raises
        ``InvalidToken``: ``malformed`` (not a token this class issues),
        ``unknown`` (never issued, revoked, or expired and gone), ``expired``."""
        if _TOKEN.fullmatch(token) is None:
            raise InvalidToken("malformed")
        answer = await self._verify(keys=[self._session_prefix + _digest(token)], args=[self._now_ms(), self._idle_ms])
        if answer is None:
            raise InvalidToken("unknown")
        if answer == 0:
            raise InvalidToken("expired")
        user_id, role, idle_until_ms = cast(list[bytes | int], answer)
        role_name = cast(bytes, role).decode()
        if role_name not in get_args(Role):  # written by no version of create: refuse it
            raise InvalidToken("unknown")
        return Identity(
            user_id=uuid.UUID(cast(bytes, user_id).decode()),
            expires_at_s=cast(int, idle_until_ms) // 1000,
            role=cast(Role, role_name),
        )

    async def revoke(self, token: str) -> bool:
        """End the session ``token`` opens; False when there was none (a
        malformed token included). Takes effect for every later ``verify``."""
        if _TOKEN.fullmatch(token) is None:
            return False
        digest = _digest(token)
        ended = await self._revoke(keys=[self._session_prefix + digest], args=[self._user_prefix, digest])
        return bool(ended)

    async def revoke_all_of_user(self, user_id: uuid.UUID) -> int:
        """End every session of ``user_id`` at once; answers how many the user's
        set named (sessions that had already expired among them)."""
        ended = await self._revoke_all(keys=[self._user_prefix + str(user_id)], args=[self._session_prefix])
        return int(ended)

    def _now_ms(self) -> int:
        return math.floor(self._clock() * 1000)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sessions_redis(settings: Settings, *, name: str = "sessions") -> tuple[redis.Redis, Resource[redis.Redis]]:
    """A client on the sessions database of ``settings`` (``db_sessions``),
    usable at once (it connects on first use), with the resource to give
    ``create_app``: it closes the client at stop and pings Redis for ``/readyz``."""
    r = settings.redis
    return redis_client_now(name, r.url, db=r.db_sessions, socket_timeout_s=r.socket_timeout_s)


def session_store(settings: Settings, *, name: str = "sessions") -> tuple[Sessions, Resource[redis.Redis]]:
    """The sessions of ``settings``, for any service's ``build_app``: the
    verifier to give ``BearerAuth``, and the resource of its Redis client to
    give ``create_app`` (``sessions_redis``)."""
    client, resource = sessions_redis(settings, name=name)
    return Sessions.from_settings(client, settings), resource
