"""The login throttle in Redis (integration, the suite's sessions database)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from nexanest.pipeline.settings import Settings
from nexanest.services.auth.throttle import LoginThrottle, Throttled

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(migrated: Settings, test_id: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(migrated.redis.url.get_secret_value(), db=migrated.redis.db_sessions)
    yield client
    keys = [k async for k in client.scan_iter(match=f"test.{test_id}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def throttle(
    client: redis.Redis, test_id: str, *, account: int = 3, address: int = 100, window_s: float = 60
) -> LoginThrottle:
    return LoginThrottle(
        client, per_account=account, per_address=address, window_s=window_s, key_prefix=f"test.{test_id}"
    )


async def refused_for(throttle: LoginThrottle, email: str, address: str) -> int:
    with pytest.raises(Throttled) as refused:
        await throttle.admit(email, address)
    return refused.value.retry_after_s


async def test_an_account_is_held_back_after_its_limit_whatever_the_case_of_its_email(
    client: redis.Redis, test_id: str
) -> None:
    limiter = throttle(client, test_id, window_s=60)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        await limiter.admit("Ada@example.com", address)
    assert 55 <= await refused_for(limiter, "ada@EXAMPLE.com", "10.0.0.4") <= 60
    await limiter.admit("bob@example.com", "10.0.0.4")  # others are not


async def test_redis_keeps_no_email(client: redis.Redis, test_id: str) -> None:
    await throttle(client, test_id).admit("zoe@example.com", "10.0.0.1")
    keys = [k async for k in client.scan_iter(match=f"test.{test_id}:*")]
    assert len(keys) == 2
    assert all(b"zoe" not in key and b"example" not in key for key in keys)  # no hex digit in either


async def test_a_success_clears_the_account_and_gives_the_address_its_attempt_back(
    client: redis.Redis, test_id: str
) -> None:
    limiter = throttle(client, test_id, account=2, address=2)
    await limiter.admit("ada@example.com", "10.0.0.1")
    await limiter.admit("ada@example.com", "10.0.0.1")
    await limiter.succeeded("ada@example.com", "10.0.0.1")
    await limiter.admit("ada@example.com", "10.0.0.1")  # account at 1, address at 2
    await limiter.succeeded("ada@example.com", "10.0.0.1")
    # Both counters are back where one failure left them.
    await limiter.admit("ada@example.com", "10.0.0.1")
    await refused_for(limiter, "bob@example.com", "10.0.0.1")


async def test_a_success_never_drives_a_counter_below_zero(client: redis.Redis, test_id: str) -> None:
    limiter = throttle(client, test_id, account=1, address=1)
    await limiter.succeeded("ada@example.com", "10.0.0.1")  # nothing was counted
    await limiter.admit("ada@example.com", "10.0.0.1")
    await refused_for(limiter, "ada@example.com", "10.0.0.1")


async def test_an_address_is_held_back_across_accounts(client: redis.Redis, test_id: str) -> None:
    limiter = throttle(client, test_id, account=100, address=3)
    for n in range(3):
        await limiter.admit(f"user{n}@example.com", "10.0.0.9")
    await refused_for(limiter, "user9@example.com", "10.0.0.9")
    await limiter.admit("user9@example.com", "10.0.0.10")


async def test_parallel_attempts_get_no_more_than_the_limit(client: redis.Redis, test_id: str) -> None:
    limiter = throttle(client, test_id, account=3)
    outcomes = await asyncio.gather(
        *(limiter.admit("ada@example.com", f"10.0.1.{n}") for n in range(20)), return_exceptions=True
    )
    assert sum(o is None for o in outcomes) == 3
    assert all(isinstance(o, Throttled) for o in outcomes if o is not None)


async def test_the_window_ends(client: redis.Redis, test_id: str) -> None:
    limiter = throttle(client, test_id, account=1, window_s=0.5)
    await limiter.admit("ada@example.com", "10.0.0.1")
    assert await refused_for(limiter, "ada@example.com", "10.0.0.1") == 1
    started = time.monotonic()
    while True:
        try:
            await limiter.admit("ada@example.com", "10.0.0.1")
            break
        except Throttled:
            assert time.monotonic() - started < 10, "the window never ended"
            await asyncio.sleep(0.05)


def test_limits_must_make_sense() -> None:
    client = redis.Redis()
    with pytest.raises(ValueError, match="at least 1"):
        LoginThrottle(client, per_account=0, per_address=1, window_s=1)
    with pytest.raises(ValueError, match="positive"):
        LoginThrottle(client, per_account=1, per_address=1, window_s=0)
