"""``nexanest migrate`` and ``nexanest topics``: make the databases and Kafka ready."""

from __future__ import annotations

import argparse
import asyncio

from nexanest.cli.runtime import EXIT_OK, Commands
from nexanest.pipeline.settings import Settings

MIGRATION_TARGETS = ["timescale", "auth", "portfolio", "analytics", "notifications"]


def register(commands: Commands) -> None:
    p = commands.add_parser("migrate", help="apply schema migrations to TimescaleDB and the service databases")
    p.add_argument("--dry-run", action="store_true", help="list pending migrations, change nothing")
    p.add_argument(
        "--target",
        action="append",
        choices=MIGRATION_TARGETS,
        help="only this database (repeatable; default: all five)",
    )
    p.set_defaults(handler=cmd_migrate)

    p = commands.add_parser("topics", help="create the pipeline's Kafka topics that do not exist yet")
    p.set_defaults(handler=cmd_topics)


async def cmd_migrate(settings: Settings, args: argparse.Namespace, _stop: asyncio.Event) -> int:
    from nexanest.ops.migrate import TARGETS, migrate

    targets = args.target or list(TARGETS)
    plan = await migrate(settings, targets, dry_run=args.dry_run)
    verb = "would apply" if args.dry_run else "applied"
    for step in plan:
        print(f"{verb} {step.target}: {step.migration.version:04d}_{step.migration.name}")
    if not plan:
        print(f"up to date: {', '.join(targets)}")
    return EXIT_OK


async def cmd_topics(settings: Settings, _args: argparse.Namespace, _stop: asyncio.Event) -> int:
    from nexanest.pipeline.kafka import ensure_topics

    created = await ensure_topics(settings.kafka)
    print(f"created: {', '.join(created)}" if created else "all topics exist")
    return EXIT_OK
