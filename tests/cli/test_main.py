"""The assembled ``nexanest`` parser and entry point (unit). The layout's rules
(nothing imports the CLI, module sizes) are in ``tests/test_layout.py``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nexanest.cli import bars, dlq, events, maintain, provision, quote, stream, verify
from nexanest.cli.main import build_parser, main, parse_args
from nexanest.cli.runtime import EXIT_USAGE

COMMANDS = {
    "migrate": provision.cmd_migrate,
    "topics": provision.cmd_topics,
    "produce synthetic": stream.cmd_produce,
    "consume": stream.cmd_consume,
    "run": stream.cmd_run,
    "quote SYM": quote.cmd_quote,
    "verify --from -1h": verify.cmd_verify,
    "dlq inspect": dlq.cmd_dlq_inspect,
    "dlq replay": dlq.cmd_dlq_replay,
    "bars show SYM --from -1h": bars.cmd_bars_show,
    "bars repair --from -1d": bars.cmd_bars_repair,
    "events": events.cmd_events,
    "maintain": maintain.cmd_maintain,
}


@pytest.mark.parametrize("argv", COMMANDS)
def test_every_command_reaches_its_handler(argv: str) -> None:
    args = parse_args(argv.split())
    assert args.handler is COMMANDS[argv]
    # Only the commands that run the pipeline open a metrics port, each its own component's.
    components = {"produce": "producer", "consume": "consumer", "run": "run"}
    assert getattr(args, "metrics_component", None) == components.get(argv.split()[0])


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("no-such-command",),
        ("produce",),
        ("produce", "synthetic", "--rate", "-1"),
        ("dlq",),
        ("bars",),
        ("bars", "AAPL", "--from", "-1h"),  # the old form: a symbol is now `bars show SYMBOL`
        ("migrate", "--target", "nowhere"),
    ],
)
def test_bad_command_lines_are_usage_errors(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == EXIT_USAGE
    assert "error" in capsys.readouterr().err


def test_invalid_settings_are_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("NEXANEST_BATCH__MAX_ROWS=many\n")
    assert main(["--env-file", str(env_file), "topics"]) == EXIT_USAGE
    assert "invalid settings" in capsys.readouterr().err


def test_help_lists_every_command_group() -> None:
    text = build_parser().format_help()
    for command in ("migrate", "topics", "produce", "consume", "run", "quote", "verify", "dlq", "bars", "events"):
        assert f"\n    {command} " in text
    assert "nexanest bars show SYN0001" in text


def test_the_module_runs_as_a_program() -> None:
    """Tests and benchmarks start consumers as ``python -m nexanest.cli.main``."""
    done = subprocess.run(
        [sys.executable, "-m", "nexanest.cli.main", "bars", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^ +show +the bars of a symbol", done.stdout, re.MULTILINE)
    assert re.search(r"^ +repair +recompute the bars", done.stdout, re.MULTILINE)
