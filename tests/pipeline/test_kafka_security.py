"""Every Kafka client gets its security options from ``connection_options``: nothing
for PLAINTEXT, SASL/SCRAM (and TLS for SASL_SSL) otherwise; a half-configured
login is refused by name, and the password never shows in settings or errors.
The cluster itself refusing and denying: tests/consumers/test_kafka_cluster.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import pytest
from pydantic import SecretStr, ValidationError

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.kafka import connection_options, consumer_options, security_options
from nexanest.pipeline.settings import KafkaSettings, Settings

#: A CA bundle that is always there: certifi's (httpx depends on it).
CA_BUNDLE = Path(certifi.where())
PASSWORD = "s3cret-kafka-password"


def sasl(**update: object) -> KafkaSettings:
    base = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_username": "nexanest-consumer",
        "sasl_password": SecretStr(PASSWORD),
    }
    return KafkaSettings.model_validate({**base, **update})


def test_plaintext_adds_no_security_options() -> None:
    assert security_options(KafkaSettings()) == {}
    assert "security_protocol" not in consumer_options(KafkaSettings(), "test")


def test_sasl_plaintext_logs_in_with_scram() -> None:
    options = connection_options(sasl(), "test")
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "nexanest-consumer"
    assert options["sasl_plain_password"] == PASSWORD
    assert "ssl_context" not in options
    # Consumers (and so every tool built on consumer_options) get the same login.
    assert consumer_options(sasl(), "test")["sasl_plain_username"] == "nexanest-consumer"


def test_sasl_ssl_verifies_the_brokers_against_the_ca_file() -> None:
    options = security_options(sasl(security_protocol="SASL_SSL", ssl_cafile=CA_BUNDLE))
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] > 0


@pytest.mark.parametrize("missing", ["sasl_username", "sasl_password"])
def test_a_sasl_protocol_without_its_login_is_refused_by_name(missing: str) -> None:
    with pytest.raises(ConfigurationError, match="NEXANEST_KAFKA__SASL_USERNAME and NEXANEST_KAFKA__SASL_PASSWORD"):
        security_options(sasl(**{missing: None}))


def test_a_ca_file_without_tls_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="only with security_protocol SASL_SSL"):
        security_options(sasl(ssl_cafile=CA_BUNDLE))


def test_the_password_is_read_as_a_secret_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXANEST_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("NEXANEST_KAFKA__SASL_USERNAME", "nexanest-producer")
    monkeypatch.setenv("NEXANEST_KAFKA__SASL_PASSWORD", PASSWORD)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings.kafka.model_dump())
    # A wrong value elsewhere in the group: pydantic quotes that field, not the password.
    monkeypatch.setenv("NEXANEST_KAFKA__SECURITY_PROTOCOL", "SASL")
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "security_protocol" in str(refused.value)
    assert PASSWORD not in str(refused.value)
