"""The ``nexanest.feeds`` entry point group: a user's plugin is found and loaded
from an installed distribution's metadata (a dist-info on ``sys.path``)."""

from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexanest.producers.feeds import registry
from nexanest.producers.feeds.adapter import FeedObserver, NullObserver


@pytest.fixture
def user_dist(tmp_path: Path) -> Iterator[Path]:
    """A distribution ``userfeeds`` that registers ``userfeed`` and a broken ``notaplugin``."""
    (tmp_path / "userfeeds_mod.py").write_text(
        textwrap.dedent(
            """
            class Plugin:
                name = "userfeed"
                summary = "a user's own feed"
                def add_arguments(self, parser):
                    parser.add_argument("--level", type=int, default=1)
                def create(self, args, settings):
                    return ("created", args.level)

            NOT_A_PLUGIN = object()
            """
        )
    )
    info = tmp_path / "userfeeds-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: userfeeds\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[nexanest.feeds]\nuserfeed = userfeeds_mod:Plugin\nnotaplugin = userfeeds_mod:NOT_A_PLUGIN\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("userfeeds_mod", None)


def test_user_plugin_is_listed_and_loaded(user_dist: Path) -> None:
    found = registry.available()
    assert {"userfeed", "notaplugin"} <= found.keys()
    plugin = registry.load("userfeed")
    assert (plugin.name, plugin.summary) == ("userfeed", "a user's own feed")
    parser = argparse.ArgumentParser()
    plugin.add_arguments(parser)
    assert plugin.create(parser.parse_args(["--level", "3"]), None) == ("created", 3)  # type: ignore[arg-type,comparison-overlap]


def test_unknown_and_broken_plugins_are_refused(user_dist: Path) -> None:
    with pytest.raises(registry.UnknownFeed, match="nosuchfeed"):
        registry.load("nosuchfeed")
    with pytest.raises(TypeError, match="not a FeedPlugin"):
        registry.load("notaplugin")


async def test_null_observer_answers_every_report_of_the_protocol() -> None:
    """Every method of ``FeedObserver`` (found at run time, so a report added to the
    protocol later is covered) exists on ``NullObserver`` with the same signature,
    and awaiting it does nothing but return."""
    reports = [name for name, value in vars(FeedObserver).items() if inspect.iscoroutinefunction(value)]
    assert sorted(reports) == ["connected", "disconnected", "gap", "malformed"]
    observer = NullObserver()
    for name in reports:
        method = getattr(observer, name)
        assert inspect.signature(method) == inspect.signature(getattr(FeedObserver, name).__get__(observer))
        parameters = inspect.signature(method).parameters.values()
        arguments = {p.name: ("x" if p.annotation in ("str", str) else 1) for p in parameters}
        assert await method(**arguments) is None
