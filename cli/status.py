"""``nexanest status``: is the stack up, and is the pipeline keeping up."""

from __future__ import annotations

import argparse
import asyncio
import json

from nexanest.cli.runtime import EXIT_ERROR, EXIT_OK, Commands, stderr_line
from nexanest.pipeline.settings import Settings

_DESCRIPTION = """\
One read-only report on the local stack (nothing is written anywhere). Every
probe runs concurrently with a short timeout (--timeout).

services      each service, up or DOWN, with its port and version:
              postgresql (5432, SHOW server_version), timescaledb (5433, extension
              version and timescaledb.license: "timescale" is the community edition,
              "apache" the Apache-2 one), redis (INFO server), kafka (brokers and the
              negotiated API version), prometheus (9090, /api/v1/status/buildinfo;
              left out when NEXANEST_PROMETHEUS_URL is empty), alertmanager (9095,
              /api/v2/status; left out when NEXANEST_ALERTMANAGER_URL is empty), and
              the HTTP services
              auth 8001, portfolio 8002, market-data 8003, notifications 8004,
              analytics 8005 (GET /healthz, then /readyz).
lag           per partition of the ticks topic: its end offset, how far the consumer
              group has consumed (the larger of the offset stored in TimescaleDB
              ingest_offsets and the one committed to Kafka), the difference in
              messages, and in time: 0 when drained, else now minus the newest stored
              tick of that kafka_partition within the last hour ("-": none there).
ticks/s       rows of stock_prices in the last 60 s, divided by 60.
newest tick   how old the newest row of stock_prices is (looked for in the last hour).
DLQ size      messages in the dead-letter topic (end minus beginning offsets).
last backup   the newest complete backup folder (with a MANIFEST) under backup_dir
              (NEXANEST_BACKUP_DIR, default backups/), and its time.

Exit status: 0 when every required service is up (the four stores, and
Prometheus and Alertmanager when configured; the HTTP services only with
--require-services),
1 when any is down: the last line names them.
"""


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "status",
        help="services up/down, consumer lag, ticks/s, DLQ size, last backup",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print JSON (every field, for scripts)")
    p.add_argument("--timeout", type=float, default=3.0, metavar="S", help="timeout of each probe (default 3 s)")
    p.add_argument("--require-services", action="store_true", help="count the HTTP services 8001-8005 as required")
    p.set_defaults(handler=cmd_status)


async def cmd_status(settings: Settings, args: argparse.Namespace, _stop: asyncio.Event) -> int:
    from nexanest.ops.status import collect
    from nexanest.ops.status_report import format_status

    report = await collect(settings, timeout_s=args.timeout, require_services=args.require_services)
    print(json.dumps(report.to_json(), indent=2) if args.json else format_status(report))
    if not report.ok:
        stderr_line(f"nexanest status: down: {', '.join(report.down)}")
    return EXIT_OK if report.ok else EXIT_ERROR
