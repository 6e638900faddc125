"""Login throttling: failed attempts counted in Redis per account and per client address.

Each attempt is counted *before* the password is checked, under both keys at
once, and a success takes its count back (the account's counter is cleared,
the address's decremented). A counter therefore holds the failures of its
window plus the attempts in flight, so that a burst of parallel guesses gets no
more tries than a patient attacker: once a counter reaches its limit, attempts
are refused unseen until its window (fixed, from its first attempt) ends, with
the time left as ``Retry-After``. An address has a higher limit than an account
(many users may share one address, one attacker many accounts).

Accounts are keyed by the SHA-256 of the lower-cased email (the database
compares emails case-insensitively), so Redis holds no email, and an email
nobody registered is counted like any other: the answer never tells whether an
account exists.
"""

from __future__ import annotations

import hashlib
import math

import redis.asyncio as redis

from nexanest.pipeline.settings import ServicesSettings

# KEYS: account, address. ARGV: account limit, address limit, window_ms.
# Answers 0 (admitted, counted) or the milliseconds until the fuller key expires.
_ADMIT = """
local wait = 0
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      redis.call('PEXPIRE', key, ARGV[3])
      ttl = tonumber(ARGV[3])
    end
    wait = math.max(wait, ttl)
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[3]) end
end
return 0
"""

# KEYS: account, address.
_SUCCEEDED = """
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('DECR', KEYS[2]) <= 0 then
  redis.call('DEL', KEYS[2])
end
return 0
"""


class Throttled(Exception):
    """Too many failed attempts: try again in ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class LoginThrottle:
    """Counts login attempts in Redis (``client``: the auth service's database)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        per_account: int,
        per_address: int,
        window_s: float,
        key_prefix: str = "auth",
    ) -> None:
        if per_account < 1 or per_address < 1 or window_s <= 0:
            raise ValueError("the limits must be at least 1 and the window positive")
        self._limits = (per_account, per_address)
        self._window_ms = math.ceil(window_s * 1000)
        self._prefix = f"{key_prefix}:login-attempts:"
        self._admit = client.register_script(_ADMIT)
        self._succeeded = client.register_script(_SUCCEEDED)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: ServicesSettings) -> LoginThrottle:
        return cls(
            client,
            per_account=settings.login_failures_per_account,
            per_address=settings.login_failures_per_address,
            window_s=settings.login_failure_window_s,
        )

    async def admit(self, email: str, address: str) -> None:
        """Count an attempt to log in as ``email`` from ``address``, or raise
        ``Throttled`` (counting nothing) when either has used up its window.
        An admitted attempt stays counted as a failure unless ``succeeded``
        follows."""
        wait_ms = int(await self._admit(keys=self._keys(email, address), args=[*self._limits, self._window_ms]))
        if wait_ms > 0:
            raise Throttled(max(1, math.ceil(wait_ms / 1000)))

    async def succeeded(self, email: str, address: str) -> None:
        """The attempt admitted for ``email`` from ``address`` succeeded: the
        account starts afresh, and the address gets its attempt back."""
        await self._succeeded(keys=self._keys(email, address))

    def _keys(self, email: str, address: str) -> list[str]:
        account = hashlib.sha256(email.lower().encode()).hexdigest()
        return [f"{self._prefix}account:{account}", f"{self._prefix}address:{address}"]
