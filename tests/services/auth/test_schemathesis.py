"""schemathesis against ``nexanest serve auth`` (``tests/services/fuzzing.py``).

``/auth/logout`` and ``/auth/password`` end the fuzzer's own session (every later
call would only see 401), so they are fuzzed in a run of their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nexanest.pipeline.settings import Settings
from tests.services.fuzzing import assert_clean, bearer_of_a_new_user, fuzz
from tests.services.served import served

pytestmark = pytest.mark.integration

SESSION_ENDING = ["/auth/logout", "/auth/password"]


def test_auth_has_no_server_error_and_keeps_its_schema(migrated: Settings, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    # Every request comes from 127.0.0.1: the fuzzer's failed logins would soon throttle
    # the address for the rest of the window (tests/services/auth/test_throttle.py proves that).
    unthrottled = {"NEXANEST_SERVICES__LOGIN_FAILURES_PER_ADDRESS": "100000"}
    with served("auth", migrated, log, env=unthrottled) as url:
        first, second = bearer_of_a_new_user(url), bearer_of_a_new_user(url)
        exclude = [arg for path in SESSION_ENDING for arg in ("--exclude-path", path)]
        assert_clean(fuzz(url, first, tmp_path / "most.toml", *exclude), "auth", log)
        include = [arg for path in SESSION_ENDING for arg in ("--include-path", path)]
        assert_clean(fuzz(url, second, tmp_path / "ending.toml", *include), "auth", log)
