"""Running the ``nexanest`` command line as a child process against a test's
settings: its databases, Redis dbs and per-test topics go to the child as
``NEXANEST_*`` variables (``namespace_environment``), which win over ``.env``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from nexanest.pipeline.settings import Settings, namespace_environment

REPO = Path(__file__).resolve().parents[1]


def nexanest_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ours, the test's settings, no fixed metrics port (tests run side by side)."""
    return {**os.environ, **namespace_environment(settings), "NEXANEST_METRICS__PRODUCER_PORT": "0", **(extra or {})}


async def spawn_nexanest(
    settings: Settings, *args: str, env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``nexanest --env-file .env ARGS`` started, its output piped (``communicate()`` it)."""
    return await asyncio.create_subprocess_exec(
        str(REPO / ".venv/bin/nexanest"),
        "--env-file",
        str(REPO / ".env"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=nexanest_env(settings, env),
        cwd=REPO,
    )


async def run_nexanest(settings: Settings, *args: str, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """``nexanest --env-file .env ARGS`` run to its end: exit status, stdout, stderr."""
    proc = await spawn_nexanest(settings, *args, env=env)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
