"""The pipeline's topics carry the configured replication factor (issue 16): 1 on
the single local broker, 3 on the local cluster, set by NEXANEST_KAFKA__REPLICATION_FACTOR."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nexanest.pipeline.kafka import pipeline_topics
from nexanest.pipeline.settings import KafkaSettings, Settings


def test_topics_default_to_one_replica() -> None:
    topics = pipeline_topics(KafkaSettings())
    assert [t.replication_factor for t in topics] == [1, 1, 1, 1]


def test_topics_take_the_replication_factor_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXANEST_KAFKA__REPLICATION_FACTOR", "3")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    topics = pipeline_topics(settings.kafka)
    assert {t.name: t.replication_factor for t in topics} == {
        settings.kafka.ticks_topic: 3,
        settings.kafka.dead_letter_topic: 3,
        settings.kafka.events_topic: 3,
        settings.kafka.backfill_topic: 3,
    }


def test_a_replication_factor_below_one_is_refused() -> None:
    with pytest.raises(ValidationError):
        KafkaSettings(replication_factor=0)
