"""``nexanest feed``: the two-step parse of ``feed run NAME [options]`` and the
built-in plugins' options (no services: nothing is run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from nexanest.cli.feed import feed_parser
from nexanest.cli.main import parse_args
from nexanest.pipeline.settings import Settings
from nexanest.producers.feed_runner import topic_of
from nexanest.producers.feeds import registry
from nexanest.producers.feeds.replay import ReplayFeed
from nexanest.producers.feeds.synthetic import SyntheticFeed


def test_feed_run_keeps_the_feeds_options_for_its_own_parser() -> None:
    args = parse_args(["feed", "run", "synthetic", "--rate", "0", "--tick-interval", "250ms", "--count", "5"])
    assert (args.command, args.feed_command, args.name) == ("feed", "run", "synthetic")
    assert args.options == ["--rate", "0", "--tick-interval", "250ms", "--count", "5"]


def test_the_synthetic_plugin_builds_a_feed_with_a_tick_interval() -> None:
    plugin = registry.load("synthetic")
    options = feed_parser("synthetic", plugin).parse_args(["--rate", "0", "--tick-interval", "250ms", "--count", "5"])
    feed = plugin.create(options, Settings(_env_file=None))  # type: ignore[call-arg]
    assert isinstance(feed, SyntheticFeed)
    assert feed.config.source.startswith("synthetic-")
    ticks = list(feed.generate())
    assert [t.ts_ns - ticks[0].ts_ns for t in ticks] == [i * 250_000_000 for i in range(5)]
    assert not feed.config.paced


def test_the_replay_plugin_publishes_history_to_the_backfill_topic(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("ts,symbol,price,size\n")
    plugin = registry.load("replay")
    options = feed_parser("replay", plugin).parse_args([str(path), "--columns", "ts=time", "--speed", "2"])
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    feed = plugin.create(options, settings)
    assert isinstance(feed, ReplayFeed)
    assert (feed.config.columns["ts"], feed.config.speed) == ("time", 2.0)
    assert topic_of(settings, feed) == settings.kafka.backfill_topic != settings.kafka.ticks_topic
    with pytest.raises(SystemExit):
        feed_parser("replay", plugin).parse_args([str(path), "--speed", "fast"])


def readme_feed_commands() -> list[list[str]]:
    """The ``nexanest feed run`` commands of the README's shell blocks, as argv after ``run``."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines() if line.startswith("nexanest feed run ")]
    return [shlex.split(line, comments=True)[3:] for line in lines]


def test_the_readmes_feed_commands_parse_and_its_synthetic_history_goes_to_the_backfill_topic() -> None:
    """Every ``feed run`` the README shows takes its options; the synthetic ones build
    a feed the consumer accepts (not refused up front), history to the backfill topic."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    commands = readme_feed_commands()
    assert {c[0] for c in commands} >= {"synthetic", "replay", "binance", "coinbase"}
    for name, *options in commands:
        if "--help" in options:
            continue
        plugin = registry.load(name)
        parsed = feed_parser(name, plugin).parse_args(options)
        if name == "synthetic":
            feed = plugin.create(parsed, settings)
            assert isinstance(feed, SyntheticFeed)
            assert topic_of(settings, feed) == settings.kafka.backfill_topic, options
