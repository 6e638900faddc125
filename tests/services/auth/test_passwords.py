"""argon2id password hashes (unit)."""

from __future__ import annotations

import asyncio

import argon2
import pytest

from nexanest.services.auth.passwords import MEMORY_COST_KIB, PARALLELISM, TIME_COST, Passwords

PASSWORD = "correct horse battery staple"


class CountingPasswords(Passwords):
    """Records every verification it runs: (hash verified against, password)."""

    def __init__(self, **parameters: int) -> None:
        super().__init__(**parameters)
        self.verified: list[str] = []

    def _verify(self, encoded: str, password: str) -> bool:
        self.verified.append(encoded)
        return super()._verify(encoded, password)


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords()


async def test_a_hash_is_argon2id_with_the_stated_parameters_and_a_fresh_salt(passwords: Passwords) -> None:
    first, second = await passwords.hash(PASSWORD), await passwords.hash(PASSWORD)
    assert first != second  # salted
    assert PASSWORD not in first
    parameters = argon2.extract_parameters(first)
    assert parameters.type is argon2.Type.ID
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (
        TIME_COST,
        MEMORY_COST_KIB,
        PARALLELISM,
    )
    assert (TIME_COST, MEMORY_COST_KIB, PARALLELISM) == (3, 65536, 4)  # what the README states


async def test_verify_tells_the_right_password_from_any_other(passwords: Passwords) -> None:
    encoded = await passwords.hash(PASSWORD)
    assert await passwords.verify(encoded, PASSWORD)
    assert not await passwords.verify(encoded, PASSWORD + " ")
    assert not await passwords.verify(encoded, "")
    assert not await passwords.verify("not a hash", PASSWORD)
    assert not await passwords.verify("$argon2id$v=19$m=65536,t=3,p=4$broken", PASSWORD)


async def test_an_unknown_user_costs_one_verification_with_the_same_parameters() -> None:
    counting = CountingPasswords()
    assert not await counting.verify_unknown_user(PASSWORD)
    assert len(counting.verified) == 1
    decoy = argon2.extract_parameters(counting.verified[0])
    real = argon2.extract_parameters(await counting.hash(PASSWORD))
    assert decoy == real


async def test_a_hash_of_other_parameters_needs_a_rehash(passwords: Passwords) -> None:
    older = Passwords(time_cost=1, memory_cost_kib=8 * 1024, parallelism=1)
    encoded = await older.hash(PASSWORD)
    assert passwords.needs_rehash(encoded)
    assert await passwords.verify(encoded, PASSWORD)  # it still opens the account meanwhile
    assert not passwords.needs_rehash(await passwords.hash(PASSWORD))
    assert passwords.needs_rehash("not a hash")


async def test_hashing_runs_off_the_event_loop() -> None:
    passwords = Passwords(max_concurrent=2)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await asyncio.gather(*(passwords.hash(PASSWORD) for _ in range(4)))
    finally:
        ticker.cancel()
    assert ticks >= 5  # the loop went on while four hashes (well over 50 ms) ran
