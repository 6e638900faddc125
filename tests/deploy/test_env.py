"""deploy/local/env.sh (unit): a new .env carries the services' token secret and
roles; an existing one keeps every line and gains only what it lacks."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.settings import load_settings
from nexanest.services.tokens import SignedTokens

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_nexanest_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment wins over .env, and the ``stack`` fixture exports the suite's
    settings into it for the session: these tests read the file alone."""
    for name in list(os.environ):
        if name.startswith("NEXANEST_"):
            monkeypatch.delenv(name)


def run_env_sh(env_file: Path, **env: str) -> None:
    subprocess.run(
        [str(REPO / "deploy/local/env.sh")],
        env={**os.environ, "NEXANEST_ENV_FILE": str(env_file), **env},
        check=True,
        capture_output=True,
        timeout=30,
    )


def token_secret_of(env_file: Path) -> str:
    found = re.findall(r"(?m)^NEXANEST_SERVICES__TOKEN_SECRET=(.*)$", env_file.read_text())
    assert len(found) == 1
    return str(found[0])


async def test_a_new_env_file_has_a_random_token_secret_the_settings_read(tmp_path: Path) -> None:
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    run_env_sh(first)
    run_env_sh(second)
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    secret = token_secret_of(first)
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert secret != token_secret_of(second)
    services = load_settings(first).services
    assert services.token_secret is not None
    assert services.token_secret.get_secret_value() == secret
    tokens = SignedTokens.from_settings(services)
    user = uuid.uuid4()
    assert (await tokens.verify(tokens.issue(user))).user_id == user


def test_an_existing_env_file_keeps_every_line_and_gains_what_it_lacks(tmp_path: Path) -> None:
    """A .env written before the services existed: its lines (and passwords,
    already in the clusters) stay as they were; the token secret and the service
    roles' passwords and DSNs are appended once, built on the passwords it has."""
    older = tmp_path / ".env"
    text = (
        "# written before the services existed\n"
        "NEXANEST_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092\n"
        "NEXANEST_REDIS_PASSWORD=kept-redis-password\n"
    )
    older.write_text(text)
    older.chmod(0o644)
    run_env_sh(older)
    topped_up = older.read_text()
    assert topped_up.startswith(text)
    assert stat.S_IMODE(older.stat().st_mode) == 0o600
    assert "NEXANEST_REDIS__URL=redis://:kept-redis-password@127.0.0.1:6379\n" in topped_up
    settings = load_settings(older)
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.services.token_secret is not None
    auth_pw = re.findall(r"(?m)^NEXANEST_AUTH_SERVICE_PASSWORD=(.*)$", topped_up)
    assert len(auth_pw) == 1
    assert (
        settings.services.auth_dsn.get_secret_value() == f"postgresql://nexanest_auth:{auth_pw[0]}@127.0.0.1:5432/auth"
    )
    # The Prometheus exporters' role (prometheus.sh) gets its own password too.
    monitor_pw = re.findall(r"(?m)^NEXANEST_MONITOR_PASSWORD=(.*)$", topped_up)
    assert len(monitor_pw) == 1
    assert re.fullmatch(r"[0-9a-f]{32}", monitor_pw[0])
    run_env_sh(older)  # complete now: nothing more is added
    assert older.read_text() == topped_up


def test_the_processes_announce_themselves_where_the_stack_s_prometheus_reads(tmp_path: Path) -> None:
    """The targets directory (pipeline/targets.py) is the one prometheus.sh's jobs
    read, under the state directory lib.sh picks; an older .env gains it, a value
    already there stays."""
    state = tmp_path / "state"
    older = tmp_path / ".env"
    older.write_text("NEXANEST_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092\n")
    run_env_sh(older, NEXANEST_STATE_DIR=str(state))
    assert load_settings(older).metrics.targets_dir == str(state / "prometheus/targets")
    config = subprocess.run(
        [str(REPO / "deploy/local/prometheus.sh"), "config"],
        env={**os.environ, "NEXANEST_STATE_DIR": str(state)},
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert f'- files: ["{state}/prometheus/targets/*.json"]' in config
    assert f'- files: ["{state}/prometheus/targets/services/*.json"]' in config
    chosen = tmp_path / "chosen.env"
    chosen.write_text("NEXANEST_METRICS__TARGETS_DIR=/srv/prometheus/targets\n")
    run_env_sh(chosen, NEXANEST_STATE_DIR=str(state))
    assert load_settings(chosen).metrics.targets_dir == "/srv/prometheus/targets"


def test_without_a_token_secret_only_a_service_refuses(tmp_path: Path) -> None:
    older = tmp_path / ".env"
    older.write_text("NEXANEST_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092\n")  # not topped up
    settings = load_settings(older)  # the pipeline still starts
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.services.token_secret is None
    with pytest.raises(ConfigurationError, match="NEXANEST_SERVICES__TOKEN_SECRET is not set"):
        SignedTokens.from_settings(settings.services)
