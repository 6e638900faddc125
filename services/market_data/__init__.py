"""The market data service (:8003): read-only access to quotes, ticks, bars and index values, and a live quote stream.

One concept per module: ``app.py`` (``build_app``: resources, routers),
``limits.py`` (every bound a request meets), ``models.py`` (the answers; prices
as decimal strings), ``quotes.py`` (Redis quotes, one round trip),
``history.py`` with ``repository.py`` and ``cursor.py`` (ticks, bars and index
values from TimescaleDB, keyset pages), ``hub.py`` (one pub/sub connection per
process fanning the consumer's quote updates out) and ``stream.py`` (the
server-sent events), ``symbols.py`` (symbol lists).
"""
