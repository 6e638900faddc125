from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.settings import (
    PostgresSettings,
    RedisSettings,
    ServicesSettings,
    Settings,
    TimescaleSettings,
    load_settings,
    namespace_environment,
    namespaced,
    separate_databases,
)


@pytest.fixture(autouse=True)
def _no_nexanest_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests build Settings from the environment: start each from none of
    the NEXANEST_* variables that a shell, or the test session itself
    (tests/conftest.py ``stack``), has set."""
    for name in [n for n in os.environ if n.startswith("NEXANEST_")]:
        monkeypatch.delenv(name)


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


def _user_settings() -> Settings:
    return Settings(  # type: ignore[call-arg]  # _env_file is pydantic-settings' init-only argument
        _env_file=None,
        timescale=TimescaleSettings(
            dsn=SecretStr("postgresql://ingest:p%40ss@127.0.0.1:5433/timescale?sslmode=disable"),
            admin_dsn=SecretStr("postgresql://owner:pw@127.0.0.1:5433/timescale"),
        ),
        postgres=PostgresSettings(auth_dsn=SecretStr("postgresql://nexanest:pw@127.0.0.1:5432/auth")),
        redis=RedisSettings(url=SecretStr("redis://:pw@127.0.0.1:6379")),
    )


def test_separate_databases_moves_every_database_and_keeps_the_rest() -> None:
    user = _user_settings()
    test = separate_databases(user)
    assert test.timescale.dsn.get_secret_value() == (
        "postgresql://ingest:p%40ss@127.0.0.1:5433/timescale_test?sslmode=disable"
    )
    assert test.timescale.admin_dsn.get_secret_value() == "postgresql://owner:pw@127.0.0.1:5433/timescale_test"
    assert {name: dsn.get_secret_value().rsplit("/", 1)[1] for name, dsn in test.postgres.dsns().items()} == {
        "auth": "auth_test",
        "portfolio": "portfolio_test",
        "analytics": "analytics_test",
        "notifications": "notifications_test",
    }
    assert {name: dsn.get_secret_value().rsplit("/", 1)[1] for name, dsn in test.services.dsns().items()} == {
        "auth_dsn": "auth_test",
        "portfolio_dsn": "portfolio_test",
        "portfolio_snapshots_dsn": "timescale_test",
        "market_data_dsn": "timescale_test",
        "analytics_dsn": "analytics_test",
        "analytics_timescale_dsn": "timescale_test",
        "notifications_dsn": "notifications_test",
    }
    # The notifications role's way into the auth database follows both DSNs.
    assert test.services.notifications_auth_dsn().get_secret_value() == (
        test.services.notifications_dsn.get_secret_value().rsplit("/", 1)[0] + "/auth_test"
    )
    r = test.redis
    assert [r.db_sessions, r.db_portfolio, r.db_quotes, r.db_analytics, r.db_notifications] == [10, 11, 12, 13, 14]
    assert r.url == user.redis.url
    assert test.kafka == user.kafka
    assert test.batch == user.batch


def test_separate_databases_refuses_what_would_share_the_users_data() -> None:
    user = _user_settings()
    pinned = user.model_copy(update={"redis": user.redis.model_copy(update={"url": SecretStr("redis://:pw@h:6379/2")})})
    with pytest.raises(ValueError, match="Redis URL names a database"):
        separate_databases(pinned)
    with pytest.raises(ValueError, match="within 0-15"):
        separate_databases(user, redis_db_offset=12)
    nameless = user.model_copy(
        update={"timescale": user.timescale.model_copy(update={"dsn": SecretStr("postgresql://u:secret@h:5433")})}
    )
    with pytest.raises(ValueError, match="names no database") as refused:
        separate_databases(nameless)
    assert "secret" not in str(refused.value)


def test_a_child_process_reads_back_the_same_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What namespace_environment hands a child wins over the user's values in
    the child's .env: the child reaches the parent's databases and topics."""
    user = _user_settings()
    parent = namespaced(separate_databases(user), "test.child", quote_rebuild_window_s=0.0)
    env_file = tmp_path / ".env"
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in namespace_environment(user).items())
        + f"NEXANEST_REDIS__URL={user.redis.url.get_secret_value()}\n"
    )
    assert load_settings(env_file).timescale == user.timescale  # the .env alone: the user's
    for name, value in namespace_environment(parent).items():
        monkeypatch.setenv(name, value)
    child = load_settings(env_file)
    assert (child.timescale, child.postgres, child.redis) == (parent.timescale, parent.postgres, parent.redis)
    assert child.services.dsns() == parent.services.dsns()
    assert child.consumer.quote_rebuild_window_s == 0.0
    names = {"ticks_topic", "dead_letter_topic", "events_topic", "consumer_group", "dlq_replay_group"}
    assert child.kafka.model_dump(include=names) == parent.kafka.model_dump(include=names)


def test_a_child_of_a_test_announces_nothing_to_the_users_prometheus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The user's .env names a targets directory (deploy/local/env.sh); neither the
    namespaced settings nor a child given namespace_environment (even of settings
    that kept the directory) announce into it."""
    env_file = tmp_path / ".env"
    env_file.write_text("NEXANEST_METRICS__TARGETS_DIR=/var/lib/nexanest/prometheus/targets\n")
    user = load_settings(env_file)
    assert user.metrics.targets_dir == "/var/lib/nexanest/prometheus/targets"
    assert Settings(_env_file=None).metrics.targets_dir == ""  # type: ignore[call-arg]  # the default: none
    assert namespaced(user, "test.quiet").metrics.targets_dir == ""
    for settings in (user, namespaced(user, "test.quiet")):
        environment = namespace_environment(settings)
        assert environment["NEXANEST_METRICS__TARGETS_DIR"] == ""
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        assert load_settings(env_file).metrics.targets_dir == ""


def test_services_listen_on_the_seeds_ports_by_default() -> None:
    services = Settings(_env_file=None).services  # type: ignore[call-arg]
    assert services.host == "127.0.0.1"
    assert services.ports() == {
        "auth": 8001,
        "portfolio": 8002,
        "market-data": 8003,
        "notifications": 8004,
        "analytics": 8005,
    }
    assert services.token_secret is None


def test_services_settings_from_nested_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXANEST_SERVICES__PORTFOLIO_PORT", "9002")
    monkeypatch.setenv("NEXANEST_SERVICES__TOKEN_SECRET", "s" * 64)
    monkeypatch.setenv("NEXANEST_SERVICES__TOKEN_LIFETIME_S", "900")
    services = Settings(_env_file=None).services  # type: ignore[call-arg]
    assert services.portfolio_port == 9002
    assert services.token_secret_or_raise().get_secret_value() == "s" * 64
    assert services.token_lifetime_s == 900
    assert "s" * 64 not in repr(services)


def test_a_short_token_secret_is_refused_when_asked_for_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXANEST_SERVICES__TOKEN_SECRET", "tooshort-hunter2")
    services = Settings(_env_file=None).services  # type: ignore[call-arg]  # the pipeline still loads
    with pytest.raises(ConfigurationError, match="too short") as refused:
        services.token_secret_or_raise()
    assert "hunter2" not in str(refused.value)


def test_a_missing_token_secret_is_an_error_only_when_asked_for() -> None:
    services = Settings(_env_file=None).services  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match=r"NEXANEST_SERVICES__TOKEN_SECRET is not set.*\.env"):
        services.token_secret_or_raise()


def test_the_notifications_role_reaches_the_auth_database_with_its_own_credentials() -> None:
    services = ServicesSettings(
        auth_dsn=SecretStr("postgresql://nexanest_auth:a@db.internal:5432/auth"),
        notifications_dsn=SecretStr(
            "postgresql://nexanest_notifications:n%40pw@db.internal:5432/notifications?sslmode=require"
        ),
    )
    assert services.notifications_auth_dsn().get_secret_value() == (
        "postgresql://nexanest_notifications:n%40pw@db.internal:5432/auth?sslmode=require"
    )
