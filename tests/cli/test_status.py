"""``nexanest status``: its help (unit); its exit status, text and JSON against
the real stack, in process and as ``make db-status`` in a child (integration)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from nexanest.cli.main import parse_args
from nexanest.cli.runtime import EXIT_ERROR, EXIT_OK
from nexanest.cli.status import cmd_status
from nexanest.pipeline.kafka import ensure_topics
from nexanest.pipeline.settings import Settings
from tests.prometheus import free_ports

REPO = Path(__file__).resolve().parents[2]

JSON_FIELDS = {
    "checked_at",
    "services",
    "topic",
    "consumer_group",
    "lag",
    "lag_error",
    "ticks_per_second",
    "newest_tick_age_s",
    "ticks_error",
    "dlq_topic",
    "dlq_size",
    "dlq_error",
    "backup_dir",
    "last_backup",
    "last_backup_time",
    "ok",
    "down",
    "total_lag",
}
SERVICE_FIELDS = {"name", "port", "up", "required", "version", "detail", "error"}


def test_the_help_explains_every_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["status", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for line in ("services", "lag", "ticks/s", "newest tick", "DLQ size", "last backup", "Exit status"):
        assert f"\n{line}" in out, line
    for port in ("5432", "5433", "9090", "8001", "8002", "8003"):
        assert port in out
    args = parse_args(["status", "--json", "--timeout", "1.5"])
    assert (args.handler, args.json, args.timeout, args.require_services) == (cmd_status, True, 1.5, False)


@pytest.mark.integration
async def test_json_has_every_field_and_exit_0_when_up(
    isolated: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await ensure_topics(isolated.kafka)
    (tmp_path / "20261201T040000Z").mkdir()
    (tmp_path / "20261201T040000Z" / "MANIFEST").write_text("created\n")
    settings = isolated.model_copy(update={"backup_dir": tmp_path})
    code = await cmd_status(settings, parse_args(["status", "--json"]), asyncio.Event())
    report = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK, report["down"]
    assert set(report) == JSON_FIELDS
    assert report["ok"] is True
    assert report["down"] == []
    names = [s["name"] for s in report["services"]]
    assert names[:4] == ["postgresql", "timescaledb", "redis", "kafka"]
    assert {"auth", "portfolio", "market-data"} <= set(names)
    for s in report["services"]:
        assert set(s) == SERVICE_FIELDS
    timescale = next(s for s in report["services"] if s["name"] == "timescaledb")
    assert timescale["port"] == 5433
    assert timescale["detail"] in ("license apache", "license timescale")
    assert len(report["lag"]) == isolated.kafka.partitions
    assert report["total_lag"] == 0
    assert report["dlq_size"] == 0
    assert report["last_backup_time"] == "2026-12-01T04:00:00Z"


@pytest.mark.integration
async def test_a_down_service_exits_1_and_is_named(isolated: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    (port,) = free_ports(1)
    settings = isolated.model_copy(
        update={"redis": isolated.redis.model_copy(update={"url": SecretStr(f"redis://127.0.0.1:{port}")})}
    )
    code = await cmd_status(settings, parse_args(["status", "--timeout", "2"]), asyncio.Event())
    captured = capsys.readouterr()
    assert code == EXIT_ERROR
    redis_row = next(line for line in captured.out.splitlines() if line.startswith("redis "))
    assert f" {port} " in redis_row
    assert " DOWN " in redis_row
    assert captured.out.splitlines()[-1] == "DOWN: redis"
    assert "down: redis" in captured.err


@pytest.mark.integration
def test_make_db_status_runs_it_and_exits_1_with_a_closed_port(isolated: Settings) -> None:
    (port,) = free_ports(1)
    # The session's environment (conftest: namespace_environment) points the child at the test databases.
    env = {**os.environ, "NEXANEST_PROMETHEUS_URL": f"http://127.0.0.1:{port}"}
    done = subprocess.run(
        ["make", "-s", "db-status", "STATUS_ARGS=--json --timeout 2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    report = json.loads(done.stdout)
    assert report["down"] == ["prometheus"]
    assert next(s for s in report["services"] if s["name"] == "prometheus")["port"] == port
    assert "down: prometheus" in done.stderr
