"""Password hashes: argon2id through argon2-cffi.

The parameters are RFC 9106's second recommended option ("if much less memory
is available"), which is also argon2-cffi's default: 3 passes over 64 MiB with
4 lanes. They are stated in the README with the time one hash takes here. A
hash records its own parameters, so a hash made under older ones still
verifies; ``needs_rehash`` says when to replace it (at the next login, the only
time the password is at hand).

Hashing is CPU and memory bound: it runs in a worker thread (argon2 releases
the GIL), at most ``max_concurrent`` at once, so that a burst of logins costs a
queue rather than ``n x 64 MiB`` of memory and a stalled event loop.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Final

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

TIME_COST: Final = 3
MEMORY_COST_KIB: Final = 64 * 1024
PARALLELISM: Final = 4
HASH_LEN: Final = 32
SALT_LEN: Final = 16


class Passwords:
    """Hashes and verifies passwords with argon2id.

    Every method that hashes runs the work off the event loop. ``verify``
    costs one full hash whatever the outcome, and so does
    ``verify_unknown_user``: a login for an email nobody registered takes as
    long as a wrong password (argon2's own comparison of the result is constant
    time)."""

    def __init__(
        self,
        *,
        time_cost: int = TIME_COST,
        memory_cost_kib: int = MEMORY_COST_KIB,
        parallelism: int = PARALLELISM,
        max_concurrent: int = 2,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            hash_len=HASH_LEN,
            salt_len=SALT_LEN,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(max_concurrent)
        # A hash of a password nobody knows, with the same parameters: what an
        # unknown user's login is verified against.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(32))

    @property
    def hasher(self) -> PasswordHasher:
        """The argon2-cffi hasher underneath, synchronous (for measurements)."""
        return self._hasher

    async def hash(self, password: str) -> str:
        """The encoded argon2id hash of ``password`` (parameters and salt included)."""
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, encoded: str, password: str) -> bool:
        """Whether ``password`` matches the hash ``encoded``. A hash this class
        cannot read (corrupt, another algorithm) matches nothing."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, encoded, password)

    async def verify_unknown_user(self, password: str) -> bool:
        """Spend what ``verify`` spends, and answer False: for an email with no user."""
        await self.verify(self._decoy, password)
        return False

    def needs_rehash(self, encoded: str) -> bool:
        """Whether ``encoded`` was made with other parameters than this hasher's."""
        try:
            return self._hasher.check_needs_rehash(encoded)
        except InvalidHashError:
            return True

    def _verify(self, encoded: str, password: str) -> bool:
        try:
            return self._hasher.verify(encoded, password)
        except (VerificationError, InvalidHashError):  # a mismatch is a VerificationError too
            return False
