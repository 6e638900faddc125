"""``nexanest maintain``: its arguments and how it reports a failed pass (unit).
Retention itself is tested in ``tests/ops/test_maintain.py``."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from nexanest.cli.main import parse_args
from nexanest.cli.maintain import cmd_maintain
from nexanest.cli.runtime import EXIT_ERROR
from nexanest.ops import maintain as maintain_module
from nexanest.pipeline.settings import Settings


async def test_a_database_error_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9: `nexanest maintain` let asyncpg's exception through to a traceback."""

    async def failing(*_: object, **__: object) -> None:
        raise asyncpg.UndefinedColumnError('column "config" does not exist')

    monkeypatch.setattr(maintain_module, "maintain", failing)
    args = parse_args(["maintain"])
    assert await cmd_maintain(Settings(), args, asyncio.Event()) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err == 'nexanest maintain failed, nothing changed: column "config" does not exist (SQLSTATE 42703)\n'


def test_maintain_arguments() -> None:
    args = parse_args(["maintain", "--dry-run", "--every", "1h30m"])
    assert (args.dry_run, args.every, args.json) == (True, 5400.0, False)
    assert parse_args(["maintain"]).every is None
    with pytest.raises(SystemExit):
        parse_args(["maintain", "--every", "0s"])
