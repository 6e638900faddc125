"""A reliable job queue in Redis (``redis.db_notifications``): nothing is lost when
a worker dies.

Keys under the prefix (``notifications.key_prefix``):

- ``queue``: jobs ready to run (a list; ``LPUSH`` in, taken from the right: first
  in, first out);
- ``processing:<worker>``: what a worker has taken and not yet acknowledged. A
  job moves there from ``queue`` in one atomic ``BLMOVE``, so at every moment it
  is in exactly one list;
- ``worker:<worker>``: the worker's heartbeat, a key with a TTL of three beats;
- ``delayed``: retries, a sorted set scored by when they are due.

A worker acknowledges a job (``ack``) only after its effect is durable, and in
the same ``MULTI`` as the jobs it leads to (a fan-out's deliveries) or its retry
(``retry_at``). A worker killed meanwhile leaves the job in its processing list;
once its heartbeat has expired, any worker (a restarted one at once, at start)
moves the list back onto the queue (``reclaim``), and the job runs again: at
least once. Doing a job twice is harmless by construction (``jobs.py``: derived
ids, the ``webhook-id``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final

import redis.asyncio as redis

#: Moves every due retry (at most ARGV[2] at once) onto the queue.
#: KEYS: delayed, queue. ARGV: now (seconds), limit.
_PROMOTE: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
  redis.call('ZREM', KEYS[1], job)
  redis.call('LPUSH', KEYS[2], job)
end
return #due
"""

#: Puts a dead worker's processing list back onto the queue, unless its heartbeat
#: is alive. KEYS: the worker's heartbeat, its processing list, the queue.
_RECLAIM: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local n = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do n = n + 1 end
return n
"""


@dataclass(frozen=True, slots=True)
class Depth:
    ready: int
    processing: int
    delayed: int


class JobQueue:
    """One process's handle on the queue. ``worker_id`` names its processing list
    and heartbeat; a producer (the evaluator, the API) never takes, so any id does.
    Every method is one round trip (one script or ``MULTI``) and raises Redis's
    errors."""

    def __init__(self, client: redis.Redis, prefix: str, *, worker_id: str | None = None) -> None:
        self._client = client
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self._ready = f"{prefix}queue"
        self._delayed = f"{prefix}delayed"
        self._processing_prefix = f"{prefix}processing:"
        self._heartbeat_prefix = f"{prefix}worker:"
        self._processing = self._processing_prefix + self.worker_id
        self._heartbeat = self._heartbeat_prefix + self.worker_id
        self._promote = client.register_script(_PROMOTE)
        self._reclaim = client.register_script(_RECLAIM)

    async def push(self, *jobs: bytes) -> None:
        if jobs:
            await self._client.lpush(self._ready, *jobs)

    async def take(self, timeout_s: int) -> bytes | None:
        """The oldest ready job, moved onto this worker's processing list; ``None``
        when none came within ``timeout_s``."""
        job = await self._client.blmove(self._ready, self._processing, timeout_s, "RIGHT", "LEFT")
        return job if job is None else bytes(job, "utf-8") if isinstance(job, str) else job

    async def ack(self, job: bytes, *then: bytes) -> None:
        """``job`` is done: off the processing list, and ``then`` (the jobs it led
        to) onto the queue, atomically."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lrem(self._processing, 1, job)  # type: ignore[arg-type] # bytes go as they are
            if then:
                pipe.lpush(self._ready, *then)
            await pipe.execute()

    async def retry_at(self, job: bytes, retry: bytes, due_s: float) -> None:
        """``job`` failed this time: off the processing list, and ``retry`` (its
        next attempt) due at ``due_s`` (Unix seconds), atomically."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lrem(self._processing, 1, job)  # type: ignore[arg-type] # bytes go as they are
            pipe.zadd(self._delayed, {retry: due_s})
            await pipe.execute()

    async def promote_due(self, now_s: float, *, limit: int = 500) -> int:
        """Move retries due by ``now_s`` onto the queue; how many moved."""
        return int(await self._promote(keys=[self._delayed, self._ready], args=[now_s, limit]))

    async def beat(self, ttl_s: float) -> None:
        """This worker is alive for ``ttl_s`` more seconds."""
        await self._client.set(self._heartbeat, b"1", px=max(1, int(ttl_s * 1000)))

    async def stop_beating(self) -> None:
        await self._client.delete(self._heartbeat)

    async def reclaim(self) -> int:
        """Put back onto the queue the processing lists of workers whose heartbeat
        has expired (this worker's own list is never touched while it beats); how
        many jobs moved."""
        moved = 0
        async for key in self._client.scan_iter(match=self._processing_prefix + "*", count=200):
            name = key.decode() if isinstance(key, bytes) else str(key)
            worker = name[len(self._processing_prefix) :]
            if worker == self.worker_id:
                continue
            n = int(await self._reclaim(keys=[self._heartbeat_prefix + worker, name, self._ready]))
            moved += max(n, 0)
        return moved

    async def depth(self) -> Depth:
        processing = 0
        async for key in self._client.scan_iter(match=self._processing_prefix + "*", count=200):
            processing += int(await self._client.llen(key))
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.llen(self._ready)
            pipe.zcard(self._delayed)
            ready, delayed = await pipe.execute()
        return Depth(int(ready), processing, int(delayed))
