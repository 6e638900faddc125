"""Webhook secrets at rest (unit): sealed, bound to their endpoint, key from the settings."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.settings import NotificationsSettings, ServicesSettings, Settings
from nexanest.services.notifications.sealing import SecretBox, SecretUnreadable


def test_seal_and_open() -> None:
    box = SecretBox(bytes(range(32)))
    endpoint, user = uuid.uuid4(), uuid.uuid4()
    sealed = box.seal("whsec_abc", endpoint, user)
    assert b"whsec_abc" not in sealed
    assert box.open(sealed, endpoint, user) == "whsec_abc"
    assert box.seal("whsec_abc", endpoint, user) != sealed  # a fresh nonce each time


def test_a_sealed_secret_opens_only_on_its_endpoint_with_its_key() -> None:
    box = SecretBox(bytes(range(32)))
    endpoint, user = uuid.uuid4(), uuid.uuid4()
    sealed = box.seal("whsec_abc", endpoint, user)
    with pytest.raises(SecretUnreadable):
        box.open(sealed, uuid.uuid4(), user)
    with pytest.raises(SecretUnreadable):
        box.open(sealed, endpoint, uuid.uuid4())
    with pytest.raises(SecretUnreadable):
        SecretBox(bytes(32)).open(sealed, endpoint, user)
    with pytest.raises(SecretUnreadable):
        box.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), endpoint, user)


def test_the_key_comes_from_the_settings() -> None:
    token = ServicesSettings(token_secret=SecretStr("t" * 64))
    derived = SecretBox.from_settings(Settings(services=token))
    sealed = derived.seal("whsec_x", uuid.UUID(int=1), uuid.UUID(int=2))
    assert SecretBox.from_settings(Settings(services=token)).open(sealed, uuid.UUID(int=1), uuid.UUID(int=2))
    own = Settings(services=token, notifications=NotificationsSettings(secret_key=SecretStr("ab" * 32)))
    with pytest.raises(SecretUnreadable):
        SecretBox.from_settings(own).open(sealed, uuid.UUID(int=1), uuid.UUID(int=2))
    bad = Settings(services=token, notifications=NotificationsSettings(secret_key=SecretStr("xyz")))
    with pytest.raises(ConfigurationError, match="64 hex digits") as raised:
        SecretBox.from_settings(bad)
    assert "xyz" not in str(raised.value)
