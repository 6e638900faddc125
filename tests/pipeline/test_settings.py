from __future__ import annotations

from pathlib import Path

import pytest

from nexanest.pipeline.settings import Settings, load_settings


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXANEST_BATCH__MAX_ROWS", "1234")
    monkeypatch.setenv("NEXANEST_KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092")
    monkeypatch.setenv("NEXANEST_REDIS__URL", "redis://:hunter2@127.0.0.1:6379")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.batch.max_rows == 1234
    assert settings.kafka.bootstrap_servers == "10.0.0.1:9092"
    assert settings.redis.url.get_secret_value().endswith("@127.0.0.1:6379")


def test_secrets_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXANEST_TIMESCALE__DSN", "postgresql://u:topsecret@h/db")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "topsecret" not in repr(settings)
    assert "topsecret" not in str(settings.model_dump())


def test_env_file_is_read(tmp_path: Path) -> None:
    env = tmp_path / "env"
    env.write_text("NEXANEST_BATCH__MAX_WAIT_MS=7\nNEXANEST_POSTGRES_PASSWORD=ignored-plain-var\n")
    assert load_settings(env).batch.max_wait_ms == 7


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXANEST_BATCH__MAX_ROWS", "0")
    with pytest.raises(ValueError, match="max_rows"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_redis_database_allocation_is_distinct() -> None:
    r = Settings(_env_file=None).redis  # type: ignore[call-arg]
    dbs = [r.db_sessions, r.db_portfolio, r.db_quotes, r.db_analytics, r.db_notifications]
    assert len(set(dbs)) == len(dbs)
