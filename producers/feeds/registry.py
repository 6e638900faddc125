"""The feed registry: the ``nexanest.feeds`` entry point group.

Each entry point names an object satisfying ``FeedPlugin`` (an instance, or a
class whose instances do: it is called with no arguments). The built-in feeds
are registered the same way in ``pyproject.toml``, so ``nexanest feed list``
shows the project's feeds and the ones a user's installed package adds alike,
and nothing in the project needs editing to add one.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Final, cast

from nexanest.producers.feeds.adapter import FeedPlugin

GROUP: Final = "nexanest.feeds"


class UnknownFeed(LookupError):
    """No entry point of that name in the group."""


def available() -> dict[str, EntryPoint]:
    """Every registered feed by name (not loaded: listing imports nothing).
    When two distributions register one name, the first found wins."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=GROUP):
        found.setdefault(point.name, point)
    return dict(sorted(found.items()))


def load(name: str) -> FeedPlugin:
    """Import the plugin registered as ``name``; raises ``UnknownFeed``."""
    point = available().get(name)
    if point is None:
        raise UnknownFeed(f"no feed named {name!r} (see `nexanest feed list`)")
    return plugin_of(point)


def plugin_of(point: EntryPoint) -> FeedPlugin:
    """The plugin an entry point names, instantiating it when it names a class."""
    target = point.load()
    plugin = target() if isinstance(target, type) else target
    for attribute in ("name", "summary", "add_arguments", "create"):
        if not hasattr(plugin, attribute):
            raise TypeError(f"entry point {point.name!r} ({point.value}) is not a FeedPlugin: no {attribute!r}")
    return cast(FeedPlugin, plugin)
