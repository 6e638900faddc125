"""The portfolio service (:8002): portfolios, their ledger, their value at live
quotes, and their history.

One concept per module:

- ``app.py``: ``build_app(settings, *, verifier=None)``, the resources and routes;
- ``routes.py``: the HTTP surface under ``/portfolios``;
- ``models.py``: request and response bodies (decimals as strings, never numbers);
- ``ledger.py``: the bookkeeping rules (average cost, cash never negative), pure;
- ``repository.py``: the portfolio database, parameterised SQL, the row lock;
- ``valuation.py``: what a portfolio is worth at given quotes, pure;
- ``quotes.py``: the pipeline's Redis quotes, many symbols in one round trip;
- ``valuation_cache.py``: the few-seconds cache of valuations, by generation;
- ``snapshot_store.py``: the ``portfolio_snapshots`` hypertable;
- ``snapshots.py``: the snapshot worker (``run_snapshots``, ``snapshot_worker``).

Security: the service connects as ``nexanest_portfolio``, which owns nothing and
bypasses nothing; every table forces row-level security keyed on
``app.user_id``, which ``acting_as`` sets per transaction. The only ways across
users are two SECURITY DEFINER functions of the migrations, for the snapshot
worker (portfolio/0002, timescale/0006).
"""
