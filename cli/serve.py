"""``nexanest serve SERVICE``: one HTTP service of the service layer, under uvicorn.

Each service is a package of ``services/`` whose ``app`` module has
``build_app(settings)``; this command only picks the port and runs it. The
uvicorn server shares the command's event loop and its stop event: the first
SIGINT/SIGTERM lets requests in flight finish (graceful shutdown, then the app's
lifespan closes its pools), a second exits at once, as for every command. Once
listening, a service announces its port to Prometheus (job ``services``,
``pipeline/targets.py``) until it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from nexanest.cli.runtime import EXIT_ERROR, EXIT_OK, Commands
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.targets import announce, withdraw

#: ``nexanest serve`` name -> the module holding its ``build_app(settings)``.
SERVICES: Final = {
    "auth": "nexanest.services.auth.app",
    "portfolio": "nexanest.services.portfolio.app",
    "market-data": "nexanest.services.market_data.app",
    "notifications": "nexanest.services.notifications.app",
    "analytics": "nexanest.services.analytics.app",
}
#: The portfolio snapshot worker: a loop, not an HTTP service.
SNAPSHOTS_WORKER: Final = "portfolio-snapshots"
#: The notifications delivery worker (and operational alerts follower): a loop, not an HTTP service.
NOTIFICATIONS_WORKER: Final = "notifications-worker"
#: The analytics worker alone (no HTTP), for a service run without it.
ANALYTICS_WORKER: Final = "analytics-worker"


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "serve",
        help="run one HTTP service (auth, portfolio, market-data, notifications, analytics) on its port",
        description=(
            "Run one service of the service layer under uvicorn, on the seed's port unless --port says "
            "otherwise (NEXANEST_SERVICES__<NAME>_PORT sets it too). Its OpenAPI document is at "
            "/openapi.json, interactive docs at /docs, probes at /healthz and /readyz. "
            "`make services-up` starts all of them in the background."
        ),
    )
    p.add_argument(
        "service",
        choices=[*sorted(SERVICES), SNAPSHOTS_WORKER, ANALYTICS_WORKER, NOTIFICATIONS_WORKER],
        help=(
            "the service to run; portfolio-snapshots is the portfolio snapshot worker alone (no HTTP), "
            "for when the portfolio service runs without it (NEXANEST_SERVICES__PORTFOLIO_SNAPSHOTS_IN_SERVICE=false); "
            "analytics-worker likewise (NEXANEST_SERVICES__ANALYTICS_WORKER_IN_SERVICE=false); "
            "notifications-worker is a notifications delivery worker alone (no HTTP)"
        ),
    )
    p.add_argument(
        "--interval", type=float, default=None, help="portfolio-snapshots, analytics-worker: seconds between rounds"
    )
    p.add_argument("--port", type=int, default=None, help="listen on this port (default: the service's own)")
    p.add_argument("--host", default=None, help="listen on this address (default: NEXANEST_SERVICES__HOST, loopback)")
    p.set_defaults(handler=cmd_serve)


async def cmd_serve(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    import uvicorn

    if args.service == SNAPSHOTS_WORKER:
        from nexanest.services.portfolio.snapshots import run_snapshots

        await run_snapshots(settings, stop=stop, interval_s=args.interval)
        return EXIT_OK
    if args.service == NOTIFICATIONS_WORKER:
        from nexanest.services.notifications.worker import run_worker

        await run_worker(settings, stop=stop)
        return EXIT_OK
    if args.service == ANALYTICS_WORKER:
        from nexanest.services.analytics.worker import run_analytics

        await run_analytics(settings, stop=stop, interval_s=args.interval)
        return EXIT_OK
    port = args.port if args.port is not None else settings.services.ports()[args.service]
    host = args.host or settings.services.host
    app = importlib.import_module(SERVICES[args.service]).build_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # uvicorn's lines go through the project's logging (pipeline/log.py)
        access_log=False,  # services/app.py logs each request itself, without query strings
        lifespan="on",
        server_header=False,
    )

    announced: list[Path] = []

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the command's stop event governs shutdown
            yield

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # listening: Prometheus may scrape /metrics on the port bound (--port 0 too)
                bound = int(self.servers[0].sockets[0].getsockname()[1])
                path = announce(settings.metrics.targets_dir, args.service, host, bound, job="services")
                announced.extend([path] if path else [])

    server = Server(config)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
    except SystemExit:  # uvicorn exits when it cannot bind the port
        print(f"nexanest serve {args.service}: cannot listen on {host}:{port}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        stopping.cancel()
        for path in announced:
            withdraw(path)
    if not server.started:
        print(f"nexanest serve {args.service}: the service did not start (see the log above)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
