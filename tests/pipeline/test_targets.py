"""A process's announcement to Prometheus (pipeline/targets.py): the file_sd
file Prometheus reads, written whole, under the name a restart replaces, and
removed by a clean exit. A real process doing it is tested in
tests/deploy/test_prometheus.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nexanest.pipeline import targets
from nexanest.pipeline.targets import announce, scrape_address, withdraw, withdraw_all


def test_a_pipeline_process_announces_its_component_and_port(tmp_path: Path) -> None:
    path = announce(str(tmp_path), "consumer", "127.0.0.1", 9108)
    assert path == tmp_path / "consumer-9108.json"
    assert json.loads(path.read_text()) == [{"targets": ["127.0.0.1:9108"], "labels": {"component": "consumer"}}]
    assert path.stat().st_mode & 0o777 == 0o644  # Prometheus may run as another user
    assert sorted(p.name for p in tmp_path.iterdir()) == ["consumer-9108.json"]  # no temporary file left
    withdraw(path)
    assert list(tmp_path.iterdir()) == []
    withdraw(path)  # twice: nothing to do, no error


def test_a_service_announces_into_the_services_job_s_directory(tmp_path: Path) -> None:
    """A directory of its own (created when missing, readable by Prometheus), so job
    ``services`` reads only services and job ``nexanest`` (``*.json``, no recursion) none."""
    path = announce(str(tmp_path), "market-data", "127.0.0.1", 8003, job="services")
    assert path == tmp_path / "services/market-data-8003.json"
    assert (tmp_path / "services").stat().st_mode & 0o777 == 0o755
    assert json.loads(path.read_text())[0]["labels"] == {"component": "market-data"}
    assert list(tmp_path.glob("*.json")) == []
    withdraw(path)


def test_a_restart_on_the_same_port_replaces_the_file(tmp_path: Path) -> None:
    first = announce(str(tmp_path), "run", "127.0.0.1", 9110)
    again = announce(str(tmp_path), "run", "127.0.0.1", 9110)
    assert first == again
    assert [p.name for p in tmp_path.iterdir()] == ["run-9110.json"]
    withdraw(again)


def test_nothing_is_announced_without_a_directory_or_a_port(tmp_path: Path) -> None:
    assert announce("", "consumer", "127.0.0.1", 9108) is None
    assert announce(str(tmp_path), "consumer", "127.0.0.1", 0) is None
    assert list(tmp_path.iterdir()) == []


def test_a_directory_it_cannot_write_costs_the_announcement_only(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    assert announce(str(blocked), "consumer", "127.0.0.1", 9108) is None
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_withdraw_all_removes_every_announcement_of_the_process(tmp_path: Path) -> None:
    paths = [announce(str(tmp_path), c, "127.0.0.1", p) for c, p in (("consumer", 9108), ("quotes", 9107))]
    assert all(p is not None and p.exists() for p in paths)
    withdraw_all()
    assert list(tmp_path.iterdir()) == []
    assert targets._announced == set()


@pytest.mark.parametrize(
    ("host", "address"),
    [("127.0.0.1", "127.0.0.1:9108"), ("0.0.0.0", "127.0.0.1:9108"), ("", "127.0.0.1:9108"),  # noqa: S104
     ("::", "127.0.0.1:9108"), ("::1", "[::1]:9108"), ("10.1.2.3", "10.1.2.3:9108")],
)  # fmt: skip
def test_the_scrape_address_is_one_prometheus_on_this_machine_reaches(host: str, address: str) -> None:
    assert scrape_address(host, 9108) == address


def test_the_temporary_file_is_never_a_target(tmp_path: Path) -> None:
    """Prometheus reads ``*.json``: the file being written is a dot file ending .tmp."""
    path = announce(str(tmp_path), "producer", "127.0.0.1", 9109)
    assert path is not None
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    assert not tmp.exists()
    assert not tmp.match("*.json")
    withdraw(path)
