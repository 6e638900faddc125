"""Fixtures of the deployment tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nexanest.pipeline.settings import Settings
from tests.prometheus import PROMETHEUS

PROMETHEUS_SH = Path(__file__).resolve().parents[2] / "deploy/local/prometheus.sh"


@pytest.fixture(scope="module")
def prometheus(stack: Settings) -> str:
    """Prometheus and its exporters started (or reloaded) by the stack's own script,
    configured from the user's .env: without the session's NEXANEST_* variables
    (Alertmanager's webhook is the user's, not the session's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXANEST_")}
    started = subprocess.run(
        [str(PROMETHEUS_SH), "start"], capture_output=True, text=True, timeout=600, check=False, env=env
    )
    if started.returncode != 0:
        pytest.fail(f"prometheus.sh start failed:\n{started.stdout}\n{started.stderr}", pytrace=False)
    return PROMETHEUS
