"""A user's own feed adapter, installed from its entry point: the README's example
(extracted from README.md, so the documentation cannot rot) as the package
``myfeeds`` with a dist-info on ``PYTHONPATH``, listed by ``nexanest feed list``
and run by ``nexanest feed run counter`` through the real publisher to Kafka."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from nexanest.pipeline.settings import Settings
from tests.nexanest_cli import REPO, run_nexanest
from tests.producers.ticks_topic import read_ticks


def install_readme_example(root: Path) -> None:
    readme = (REPO / "README.md").read_text()
    code = re.search(r"<!-- feed-plugin-example -->\n```python\n(.*?)```\n<!-- /feed-plugin-example -->", readme, re.S)
    assert code is not None, "README.md lost its feed plugin example"
    package = root / "myfeeds"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "counter.py").write_text(code.group(1))
    info = root / "myfeeds-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myfeeds\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nexanest.feeds]\ncounter = myfeeds.counter:Plugin\n")


async def nexanest(settings: Settings, root: Path, *args: str) -> str:
    """``nexanest ARGS`` with the plugin's package in ``root`` importable."""
    code, out, err = await run_nexanest(settings, *args, env={"PYTHONPATH": str(root)})
    assert code == 0, (out + err)[-3000:]
    return out


@pytest.mark.integration
async def test_a_users_plugin_runs_through_the_publisher_to_kafka(isolated: Settings, tmp_path: Path) -> None:
    install_readme_example(tmp_path)
    listed = await nexanest(isolated, tmp_path, "feed", "list")
    assert re.search(r"^counter\s+COUNT ticks of DEMO", listed, re.M), listed
    assert re.search(r"^replay\s", listed, re.M)
    assert re.search(r"^synthetic\s", listed, re.M)

    before = time.time_ns()
    out = await nexanest(isolated, tmp_path, "feed", "run", "counter", "--count", "25")
    assert "published 25 ticks" in out

    ticks = [tick for _, _, tick in await read_ticks(isolated, 25)]
    assert len(ticks) == 25
    assert {(t.symbol, t.exchange, t.source) for t in ticks} == {("DEMO", "DEMO", "counter")}
    ticks.sort(key=lambda t: t.seq)
    assert ticks[0].seq >= before  # a live feed numbers from the clock: a restart never reuses a seq
    assert [t.seq - ticks[0].seq for t in ticks] == list(range(25))
    assert [t.price_e9 for t in ticks] == [(100 + i) * 10**9 + 250_000_000 for i in range(25)]
    assert {t.size_e9 for t in ticks} == {1_500_000_000}
