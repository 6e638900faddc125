"""The assembled ``nexanest`` parser and entry point (unit), and the import rule
of the layout: the CLI imports everything, nothing imports the CLI."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nexanest.cli import bars, dlq, events, maintain, provision, quote, stream, verify
from nexanest.cli.main import build_parser, main, parse_args
from nexanest.cli.runtime import EXIT_USAGE

REPO = Path(__file__).resolve().parents[2]

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


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_nothing_outside_the_cli_imports_it() -> None:
    product = [REPO / name for name in ("schemas", "pipeline", "ops", "consumers", "producers", "services")]
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in _imported_modules(path) if m.startswith("nexanest.cli"))
        for folder in product
        if folder.is_dir()
        for path in folder.rglob("*.py")
    }
    assert {path: found for path, found in offenders.items() if found} == {}
    assert len(offenders) > 20  # the folders were found and read


def test_cli_modules_stay_small() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in (REPO / "cli").glob("*.py")}
    assert sizes.keys() >= {"main.py", "stream.py", "live_view.py", "bars.py"}
    assert {name: n for name, n in sizes.items() if n > 400} == {}
