"""What the venue feed plugins (``binance``, ``coinbase``) share: their command
line (``--symbols``, ``--symbol-map``, ``--source``, ``--url``), their
normaliser, and their connection options from the settings
(``NEXANEST_VENUES__*``, ``NEXANEST_RETRY__*``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping

from nexanest.pipeline.settings import Settings
from nexanest.producers.feeds.websocket import ConnectionOptions
from nexanest.producers.normalise import Normaliser, add_symbol_map_argument, live_seq_start


def connection_options(
    settings: Settings, *, max_connection_age_s: float | None = None, idle_timeout_s: float | None = None
) -> ConnectionOptions:
    """The connection options of the venues' settings (``NEXANEST_VENUES__*``) and the retry policy."""
    v = settings.venues
    return ConnectionOptions(
        open_timeout_s=v.open_timeout_s,
        ping_interval_s=v.ping_interval_s,
        ping_timeout_s=v.ping_timeout_s,
        max_connection_age_s=max_connection_age_s,
        idle_timeout_s=idle_timeout_s,
        retry=settings.retry,
    )


def venue_normaliser(
    venue: str, source: str, venue_symbols: Iterable[str], symbol_map: Mapping[str, str], seq_start: int | None
) -> tuple[Normaliser, list[str]]:
    """The normaliser of a live venue feed and its canonical symbols (sorted): each
    venue symbol (upper case) maps through ``symbol_map`` or stays itself, and
    sequence numbers start at the clock's ns unless ``seq_start`` is given."""
    mapping = {s: symbol_map.get(s, s) for s in venue_symbols}
    normaliser = Normaliser(venue, source, mapping, live_seq_start() if seq_start is None else seq_start)
    return normaliser, sorted(set(mapping.values()))


def add_venue_arguments(
    parser: argparse.ArgumentParser, name: str, *, symbols_help: str, map_help: str, url_help: str
) -> None:
    """The command line every venue feed plugin shares: ``--symbols``, ``--symbol-map``,
    ``--source`` (default: the plugin's name) and ``--url``."""
    parser.add_argument("--symbols", type=parse_symbols, required=True, help=symbols_help)
    add_symbol_map_argument(parser, map_help)
    parser.add_argument(
        "--source",
        default=name,
        help=f"the source tag of the ticks (default: {name}); sequence numbers start at the clock's ns, "
        "so a restart never reuses one",
    )
    parser.add_argument("--url", help=url_help)


def parse_symbols(text: str) -> list[str]:
    """``"btcusdt, ethusdt"`` -> ``["btcusdt", "ethusdt"]``; raises ``ArgumentTypeError`` when empty."""
    symbols = [s.strip() for s in text.split(",") if s.strip()]
    if not symbols:
        raise argparse.ArgumentTypeError("give at least one symbol")
    return symbols
