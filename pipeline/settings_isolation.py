"""Copies of the settings that keep a run apart from others on one shared stack:
topics, consumer groups and Redis keys of its own (``namespaced``), databases
of its own (``separate_databases``), and the environment that hands the same to
a child ``nexanest`` process (``namespace_environment``). Tests and benchmarks
run on these, so that they never see, nor touch, a user's data."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

if TYPE_CHECKING:
    from nexanest.pipeline.settings import Settings
    from nexanest.pipeline.settings_pipeline import MetricsSettings


def namespaced(settings: Settings, namespace: str, **consumer: object) -> Settings:
    """A copy of ``settings`` with topics, consumer groups and Redis quote and bar keys of
    its own (``<namespace>.ticks``, ``<namespace>.ticks.dlq``, ...), and no metrics
    HTTP server nor announcement to Prometheus: for tests, benchmarks and
    side-by-side runs that share one stack but must not see each other's data.
    ``consumer`` overrides ConsumerSettings."""
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={
                    "ticks_topic": f"{namespace}.ticks",
                    "dead_letter_topic": f"{namespace}.ticks.dlq",
                    "events_topic": f"{namespace}.events",
                    "backfill_topic": f"{namespace}.ticks.backfill",
                    "consumer_group": namespace,
                    "dlq_replay_group": f"{namespace}.dlq-replay",
                }
            ),
            "redis": settings.redis.model_copy(
                update={"quote_key_prefix": f"{namespace}:quote:", "bar_key_prefix": f"{namespace}:bar:"}
            ),
            "metrics": settings.metrics.model_copy(update={"port": 0, "targets_dir": ""}),
            "consumer": settings.consumer.model_copy(update=consumer),
        }
    )


def separate_databases(settings: Settings, *, suffix: str = "_test", redis_db_offset: int = 10) -> Settings:
    """A copy of ``settings`` that stores nothing where ``settings`` does: the
    TimescaleDB and service databases become ``<name><suffix>`` on the same
    servers with the same roles (the service roles' DSNs too), and each Redis database moves up by
    ``redis_db_offset`` (0-4 become 10-14, inside the unallocated 5-15). The test
    suite runs on it, so that running the tests leaves the user's data as it was.

    Nothing is created here: ``deploy/local`` creates the ``_test`` databases
    with the same roles, grants and extension as the real ones. Raises
    ``ValueError`` when a DSN names no database, when the Redis URL pins a
    database (redis-py lets the URL's win over the one asked for, which would
    put both on one), or when a moved Redis database falls outside 0-15.
    """
    r = settings.redis
    if urlsplit(r.url.get_secret_value()).path.strip("/"):
        raise ValueError("the Redis URL names a database; set NEXANEST_REDIS__DB_* instead")
    moved = {
        name: getattr(r, name) + redis_db_offset
        for name in ("db_sessions", "db_portfolio", "db_quotes", "db_analytics", "db_notifications")
    }
    if not all(0 <= db <= 15 for db in moved.values()):
        raise ValueError(f"Redis databases {sorted(moved.values())} are not all within 0-15")
    ts, pg, sv = settings.timescale, settings.postgres, settings.services
    return settings.model_copy(
        update={
            "timescale": ts.model_copy(
                update={
                    "dsn": _database_suffixed(ts.dsn, suffix),
                    "admin_dsn": _database_suffixed(ts.admin_dsn, suffix),
                }
            ),
            "postgres": pg.model_copy(
                update={f"{name}_dsn": _database_suffixed(dsn, suffix) for name, dsn in pg.dsns().items()}
            ),
            "services": sv.model_copy(
                update={name: _database_suffixed(dsn, suffix) for name, dsn in sv.dsns().items()}
            ),
            "redis": r.model_copy(update=moved),
        }
    )


def _database_suffixed(dsn: SecretStr, suffix: str) -> SecretStr:
    parts = urlsplit(dsn.get_secret_value())
    database = parts.path.strip("/")
    if not database:
        # Never echo the DSN: it carries the password.
        raise ValueError(f"a PostgreSQL DSN for host {parts.hostname!r} names no database")
    return SecretStr(urlunsplit(parts._replace(path=f"/{database}{suffix}")))


def namespace_environment(settings: Settings) -> dict[str, str]:
    """The ``NEXANEST_*`` variables that give a child ``nexanest`` process the same
    topics, consumer groups, databases, Redis databases and quote keys and consumer
    options as ``settings``. Environment variables win over the child's ``.env``,
    so a child of a test (given ``separate_databases``) never reaches the user's
    data. The values include DSNs with passwords: pass them in a child's
    environment (private to its user), never on its command line.

    The child announces nothing to Prometheus (``NEXANEST_METRICS__TARGETS_DIR``
    empty, whatever ``settings`` or ``.env`` say): a test's or benchmark's process
    never becomes a target of the user's Prometheus. A test that wants the
    announcement sets the variable after these."""
    k, c, r = settings.kafka, settings.consumer, settings.redis
    pg = settings.postgres
    return {
        "NEXANEST_KAFKA__TICKS_TOPIC": k.ticks_topic,
        "NEXANEST_KAFKA__DEAD_LETTER_TOPIC": k.dead_letter_topic,
        "NEXANEST_KAFKA__EVENTS_TOPIC": k.events_topic,
        "NEXANEST_KAFKA__BACKFILL_TOPIC": k.backfill_topic,
        "NEXANEST_KAFKA__CONSUMER_GROUP": k.consumer_group,
        "NEXANEST_KAFKA__DLQ_REPLAY_GROUP": k.dlq_replay_group,
        "NEXANEST_TIMESCALE__DSN": settings.timescale.dsn.get_secret_value(),
        "NEXANEST_TIMESCALE__ADMIN_DSN": settings.timescale.admin_dsn.get_secret_value(),
        "NEXANEST_POSTGRES__AUTH_DSN": pg.auth_dsn.get_secret_value(),
        "NEXANEST_POSTGRES__PORTFOLIO_DSN": pg.portfolio_dsn.get_secret_value(),
        "NEXANEST_POSTGRES__ANALYTICS_DSN": pg.analytics_dsn.get_secret_value(),
        "NEXANEST_POSTGRES__NOTIFICATIONS_DSN": pg.notifications_dsn.get_secret_value(),
        **{
            f"NEXANEST_SERVICES__{name.upper()}": dsn.get_secret_value()
            for name, dsn in settings.services.dsns().items()
        },
        "NEXANEST_REDIS__DB_SESSIONS": str(r.db_sessions),
        "NEXANEST_REDIS__DB_PORTFOLIO": str(r.db_portfolio),
        "NEXANEST_REDIS__DB_QUOTES": str(r.db_quotes),
        "NEXANEST_REDIS__DB_ANALYTICS": str(r.db_analytics),
        "NEXANEST_REDIS__DB_NOTIFICATIONS": str(r.db_notifications),
        "NEXANEST_REDIS__QUOTE_KEY_PREFIX": r.quote_key_prefix,
        "NEXANEST_REDIS__BAR_KEY_PREFIX": r.bar_key_prefix,
        **_metrics_ports(settings.metrics),
        "NEXANEST_CONSUMER__QUOTE_REBUILD_WINDOW_S": str(c.quote_rebuild_window_s),
    }


def _metrics_ports(m: MetricsSettings) -> dict[str, str]:
    ports = {
        "NEXANEST_METRICS__CONSUMER_PORT": str(m.consumer_port),
        "NEXANEST_METRICS__PRODUCER_PORT": str(m.producer_port),
        "NEXANEST_METRICS__RUN_PORT": str(m.run_port),
        "NEXANEST_METRICS__QUOTES_PORT": str(m.quotes_port),
    }
    if m.port is not None:
        ports["NEXANEST_METRICS__PORT"] = str(m.port)
    return ports | {"NEXANEST_METRICS__TARGETS_DIR": ""}
