"""Sessions in Redis (integration, the suite's sessions database): tokens,
idle and absolute expiry, revocation of one session and of all of a user's.

Each test keeps its keys under a prefix of its own, removed afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from nexanest.pipeline.settings import Settings
from nexanest.services.sessions import Sessions, session_store
from nexanest.services.tokens import Identity, InvalidToken

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now_s: float = T0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
async def client(migrated: Settings) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(migrated.redis.url.get_secret_value(), db=migrated.redis.db_sessions)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(client: redis.Redis, test_id: str) -> AsyncIterator[str]:
    prefix = f"test.{test_id}"
    yield prefix
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)


async def refusal(sessions: Sessions, token: str) -> str:
    with pytest.raises(InvalidToken) as refused:
        await sessions.verify(token)
    return refused.value.reason


async def test_a_token_opens_its_session_and_redis_keeps_only_its_hash(client: redis.Redis, prefix: str) -> None:
    clock = Clock()
    sessions = Sessions(client, idle_s=600, absolute_s=3600, key_prefix=prefix, clock=clock)
    user = uuid.uuid4()
    new = await sessions.create(user, "admin")
    assert new.expires_in_s == 600
    assert new.identity == Identity(user_id=user, expires_at_s=int(T0) + 600, role="admin")
    assert await sessions.verify(new.token) == new.identity
    stored = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    digest = hashlib.sha256(new.token.encode()).hexdigest()
    assert sorted(stored) == sorted([f"{prefix}:session:{digest}".encode(), f"{prefix}:user-sessions:{user}".encode()])
    # Nowhere the token itself: not in a key, not in a value.
    assert all(new.token.encode() not in key for key in stored)
    values = await client.hgetall(f"{prefix}:session:{digest}")
    assert all(new.token.encode() not in v for v in values.values())
    assert await client.zrange(f"{prefix}:user-sessions:{user}", 0, -1) == [digest.encode()]


async def test_tokens_never_issued_or_malformed_are_refused(client: redis.Redis, prefix: str) -> None:
    sessions = Sessions(client, idle_s=600, absolute_s=3600, key_prefix=prefix)
    new = await sessions.create(uuid.uuid4(), "user")
    assert await refusal(sessions, new.token[:-1] + ("A" if new.token[-1] != "A" else "B")) == "unknown"
    assert await refusal(sessions, "") == "malformed"
    assert await refusal(sessions, new.token + "x") == "malformed"
    assert await refusal(sessions, "*" * 43) == "malformed"
    # The digest of a session is no token either.
    assert await refusal(sessions, hashlib.sha256(new.token.encode()).hexdigest()) == "malformed"


async def test_use_pushes_the_idle_expiry_forward_but_never_past_the_absolute_one(
    client: redis.Redis, prefix: str
) -> None:
    clock = Clock()
    sessions = Sessions(client, idle_s=600, absolute_s=1500, key_prefix=prefix, clock=clock)
    new = await sessions.create(uuid.uuid4(), "user")
    clock.now_s = T0 + 599  # just inside the idle time: refreshed to 599 + 600
    assert (await sessions.verify(new.token)).expires_at_s == int(T0) + 1199
    clock.now_s = T0 + 1198
    assert (await sessions.verify(new.token)).expires_at_s == int(T0) + 1500  # capped by the absolute expiry
    clock.now_s = T0 + 1499.9
    assert (await sessions.verify(new.token)).expires_at_s == int(T0) + 1500
    clock.now_s = T0 + 1500
    assert await refusal(sessions, new.token) == "expired"
    assert await refusal(sessions, new.token) == "unknown"  # and it is gone


async def test_an_idle_session_expires_by_the_clock(client: redis.Redis, prefix: str) -> None:
    clock = Clock()
    sessions = Sessions(client, idle_s=600, absolute_s=3600, key_prefix=prefix, clock=clock)
    new = await sessions.create(uuid.uuid4(), "user")
    clock.now_s = T0 + 600
    assert await refusal(sessions, new.token) == "expired"


async def test_an_idle_session_expires_in_real_time_and_redis_forgets_it(client: redis.Redis, prefix: str) -> None:
    idle_s = 0.5
    sessions = Sessions(client, idle_s=idle_s, absolute_s=60, key_prefix=prefix)
    new = await sessions.create(uuid.uuid4(), "user")
    digest = hashlib.sha256(new.token.encode()).hexdigest()
    created = time.monotonic()
    await sessions.verify(new.token)  # used once: still idle_s from now
    deadline = created + 10
    while await client.exists(f"{prefix}:session:{digest}"):
        assert time.monotonic() < deadline, "the session outlived its idle time by far"
        await asyncio.sleep(0.05)
    assert time.monotonic() - created >= idle_s
    assert await refusal(sessions, new.token) == "unknown"


async def test_revoking_a_session_ends_it_at_once_and_spares_the_others(client: redis.Redis, prefix: str) -> None:
    sessions = Sessions(client, idle_s=600, absolute_s=3600, key_prefix=prefix)
    user = uuid.uuid4()
    first, second = await sessions.create(user, "user"), await sessions.create(user, "user")
    assert await sessions.revoke(first.token)
    assert await refusal(sessions, first.token) == "unknown"
    assert (await sessions.verify(second.token)).user_id == user
    assert not await sessions.revoke(first.token)  # once only
    assert not await sessions.revoke("not a token")
    assert await client.zrange(f"{prefix}:user-sessions:{user}", 0, -1) == [
        hashlib.sha256(second.token.encode()).hexdigest().encode()
    ]


async def test_revoking_all_of_a_user_ends_every_session_of_that_user_only(client: redis.Redis, prefix: str) -> None:
    sessions = Sessions(client, idle_s=600, absolute_s=3600, key_prefix=prefix)
    user, other = uuid.uuid4(), uuid.uuid4()
    mine = [await sessions.create(user, "user") for _ in range(3)]
    theirs = await sessions.create(other, "user")
    assert await sessions.revoke_all_of_user(user) == 3
    for new in mine:
        assert await refusal(sessions, new.token) == "unknown"
    assert (await sessions.verify(theirs.token)).user_id == other
    assert not await client.exists(f"{prefix}:user-sessions:{user}")
    # A session created afterwards (the fresh login after a password change) works.
    after = await sessions.create(user, "user")
    assert (await sessions.verify(after.token)).user_id == user


async def test_a_verify_racing_a_revoke_never_brings_the_session_back(client: redis.Redis, prefix: str) -> None:
    sessions = Sessions(client, idle_s=600, absolute_s=3600, key_prefix=prefix)
    for _ in range(20):
        new = await sessions.create(uuid.uuid4(), "user")
        outcomes = await asyncio.gather(sessions.verify(new.token), sessions.revoke(new.token), return_exceptions=True)
        assert outcomes[1] is True
        assert isinstance(outcomes[0], Identity | InvalidToken)
        assert await refusal(sessions, new.token) == "unknown"
        digest = hashlib.sha256(new.token.encode()).hexdigest()
        assert not await client.exists(f"{prefix}:session:{digest}")


async def test_the_user_set_drops_sessions_past_their_absolute_expiry(client: redis.Redis, prefix: str) -> None:
    clock = Clock()
    sessions = Sessions(client, idle_s=60, absolute_s=100, key_prefix=prefix, clock=clock)
    user = uuid.uuid4()
    await sessions.create(user, "user")
    clock.now_s = T0 + 100
    await sessions.create(user, "user")
    assert await client.zcard(f"{prefix}:user-sessions:{user}") == 1


def test_idle_and_absolute_times_must_be_positive() -> None:
    client = redis.Redis()
    with pytest.raises(ValueError, match="positive"):
        Sessions(client, idle_s=0, absolute_s=60)
    with pytest.raises(ValueError, match="positive"):
        Sessions(client, idle_s=60, absolute_s=-1)


async def test_the_store_of_the_settings_uses_the_sessions_database_and_its_times(migrated: Settings) -> None:
    sessions, resource = session_store(migrated)
    async with resource.open() as client:
        new = await sessions.create(uuid.uuid4(), "user")
        assert new.expires_in_s == migrated.services.session_idle_s
        info = await client.client_info()
        assert info["db"] == migrated.redis.db_sessions
        assert resource.check is not None
        await resource.check(client)
        assert await sessions.revoke(new.token)
