"""``nexanest migrate`` and ``nexanest topics``: arguments (unit). Migrations
themselves are tested in ``tests/ops/test_migrate.py``."""

from __future__ import annotations

from nexanest.cli.main import parse_args
from nexanest.cli.provision import MIGRATION_TARGETS, cmd_migrate, cmd_topics
from nexanest.ops.migrate import TARGETS


def test_the_cli_offers_every_migration_target() -> None:
    """The CLI lists them itself, so that --help need not import the migration code."""
    assert list(TARGETS) == MIGRATION_TARGETS


def test_provision_arguments() -> None:
    args = parse_args(["migrate", "--dry-run", "--target", "timescale", "--target", "auth"])
    assert (args.handler, args.dry_run, args.target) == (cmd_migrate, True, ["timescale", "auth"])
    assert parse_args(["migrate"]).target is None  # all of them
    assert parse_args(["topics"]).handler is cmd_topics
