"""The one configuration object of the pipeline.

Every address, credential, topic name, batch size and timeout lives here and is
read from ``NEXANEST_*`` environment variables (nested groups with ``__``, so the
batch size is ``NEXANEST_BATCH__MAX_ROWS``) or from the git-ignored ``.env`` that
``deploy/local/env.sh`` generates. Entrypoints build it once and hand each
component its sub-model; library code never reads the environment.

The groups live in modules by area, and are re-exported here (import them from
``nexanest.pipeline.settings``): ``settings_connections`` (Kafka, TimescaleDB,
PostgreSQL, Redis), ``settings_pipeline`` (batching, validation, consumer,
quotes, indices, retries, venues, events, retention, metrics, log),
``settings_services`` (the HTTP services, notifications, alerting), and
``settings_isolation`` (copies of the settings for runs that share one stack).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nexanest.pipeline.settings_connections import KafkaSettings, PostgresSettings, RedisSettings, TimescaleSettings
from nexanest.pipeline.settings_isolation import namespace_environment, namespaced, separate_databases
from nexanest.pipeline.settings_pipeline import (
    BatchSettings,
    ConsumerSettings,
    EventsSettings,
    IndexDefinition,
    LogSettings,
    MetricsComponent,
    MetricsSettings,
    QuotesSettings,
    RetentionSettings,
    RetrySettings,
    ValidationSettings,
    VenueSettings,
)
from nexanest.pipeline.settings_services import AlertingSettings, NotificationsSettings, ServicesSettings

__all__ = [
    "AlertingSettings",
    "BatchSettings",
    "ConsumerSettings",
    "EventsSettings",
    "IndexDefinition",
    "KafkaSettings",
    "LogSettings",
    "MetricsComponent",
    "MetricsSettings",
    "NotificationsSettings",
    "PostgresSettings",
    "QuotesSettings",
    "RedisSettings",
    "RetentionSettings",
    "RetrySettings",
    "ServicesSettings",
    "Settings",
    "TimescaleSettings",
    "ValidationSettings",
    "VenueSettings",
    "load_settings",
    "namespace_environment",
    "namespaced",
    "separate_databases",
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NEXANEST_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    timescale: TimescaleSettings = TimescaleSettings()
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    batch: BatchSettings = BatchSettings()
    validation: ValidationSettings = ValidationSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    quotes: QuotesSettings = QuotesSettings()
    retry: RetrySettings = RetrySettings()
    venues: VenueSettings = VenueSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    events: EventsSettings = EventsSettings()
    retention: RetentionSettings = RetentionSettings()
    services: ServicesSettings = ServicesSettings()
    notifications: NotificationsSettings = NotificationsSettings()
    alerting: AlertingSettings = AlertingSettings()
    #: Market indices (``NEXANEST_INDICES``, a JSON list of IndexDefinition objects).
    indices: list[IndexDefinition] = Field(default_factory=list)
    #: Where `db-backup` and friends write; relative paths are from the working directory.
    backup_dir: Path = Path("backups")
    #: Where `nexanest feed run replay` keeps one checkpoint per file (NEXANEST_FEED_STATE_DIR).
    feed_state_dir: Path = Path(".nexanest/feeds")
    #: Where `nexanest status` finds Prometheus (deploy/local/prometheus.sh); empty: not configured.
    prometheus_url: str = "http://127.0.0.1:9090"
    #: Where `nexanest status` finds Alertmanager (deploy/local/prometheus.sh starts it on 9095,
    #: not its usual 9093: the local Kafka controller has that); empty: not configured.
    alertmanager_url: str = "http://127.0.0.1:9095"

    @model_validator(mode="after")
    def _unique_index_names(self) -> Settings:
        names = [d.name for d in self.indices]
        if len(set(names)) != len(names):
            raise ValueError("two indices share a name")
        return self


def load_settings(env_file: Path | None = None) -> Settings:
    """Build the settings from the environment and ``env_file`` (default ``.env``)."""
    if env_file is None:
        return Settings()
    return Settings(_env_file=env_file)  # type: ignore[call-arg]
