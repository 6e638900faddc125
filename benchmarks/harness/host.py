"""The machine and services a run reports beside its figures, and restarts that
void them (other sessions on this shared machine run fault tests)."""

from __future__ import annotations

import asyncio
import os
import platform
from pathlib import Path
from typing import Any

import asyncpg

from nexanest.consumers.ticks_to_timescale import open_quotes_redis
from nexanest.pipeline.settings import Settings

KAFKA_SH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka.sh"
_SHOW = {"postgresql": "server_version", "timescaledb_license": "timescaledb.license"}
_SHOW |= {name: name for name in ("synchronous_commit", "shared_buffers", "max_wal_size")}


async def _server(settings: Settings) -> tuple[asyncpg.Record, dict[str, Any]]:
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    redis = open_quotes_redis(settings)
    try:
        return await conn.fetchrow("SELECT pg_postmaster_start_time()::text AS started"), dict(
            await redis.info("server")
        )
    finally:
        await conn.close()
        await redis.aclose()


async def machine(settings: Settings) -> dict[str, Any]:
    """Cores, memory, versions and database settings, once at the start of a run."""
    meminfo, cpuinfo = (Path(f"/proc/{name}").read_text() for name in ("meminfo", "cpuinfo"))  # noqa: ASYNC240 - /proc
    conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
    try:
        shown = {key: await conn.fetchval(f"SHOW {name}") for key, name in _SHOW.items()}
        ext = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    finally:
        await conn.close()
    status = await asyncio.create_subprocess_exec(str(KAFKA_SH), "status", stdout=asyncio.subprocess.PIPE)
    words = [*(await status.communicate())[0].decode().split(), "version", "unknown"]
    return shown | {
        "cores": os.cpu_count(),
        "memory_gib": round(int(meminfo.split()[meminfo.split().index("MemTotal:") + 1]) / 2**20, 1),
        "cpu": next(
            (ln.split(":")[1].strip() for ln in cpuinfo.splitlines() if "model name" in ln), platform.processor()
        ),
        "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg(),
        "kafka": words[words.index("version") + 1],
        "redis": (await _server(settings))[1]["redis_version"],
        "timescaledb": ext,
    }


def state_dir() -> Path:
    """deploy/local's state directory (its run/ holds the services' pid files)."""
    default = "/var/lib/nexanest" if os.geteuid() == 0 else str(Path.home() / ".local/share/nexanest")
    return Path(os.environ.get("NEXANEST_STATE_DIR", default))


def pid_of(service: str) -> int | None:
    """A local service's pid, from deploy/local's state directory."""
    path = state_dir() / ("timescaledb/postmaster.pid" if service == "timescaledb" else f"run/{service}.pid")
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


async def service_identities(settings: Settings) -> dict[str, str]:
    """Something that changes when a service restarts."""
    pg, redis = await _server(settings)
    return {"timescaledb": pg["started"], "redis": str(redis["run_id"]), "kafka": str(pid_of("kafka"))}


def restarted(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before if before[k] != after.get(k))
