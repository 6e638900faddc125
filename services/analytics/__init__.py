"""The analytics service (:8005): metrics of portfolios and symbols, computed on a
schedule and on demand, and saved reports.

One concept per module:

- ``app.py``: ``build_app(settings, *, verifier=None)``, the resources and routes;
- ``routes.py``: the HTTP surface under ``/analytics``;
- ``models.py``: request and response bodies, the saved reports' query definition;
- ``metrics.py``: the figures, pure functions with their formulas and precision;
- ``series.py``: the series they are computed from (snapshots, bars, indices, ticks);
- ``store.py``: the ``analytics_metrics`` hypertable;
- ``cache.py``: the latest metrics of each subject in Redis;
- ``compute.py``: one computation (read, compute, store, cache), shared by
  ``worker.py`` (the schedule) and the on-demand routes;
- ``reports.py``: the saved reports in the analytics database.

Security: the service connects as ``nexanest_analytics``, which owns nothing and
bypasses nothing. ``analytics_metrics`` and ``saved_reports`` force row-level
security keyed on ``app.user_id`` (``acting_as``), so a user reaches only their
own portfolios' metrics and their own reports. The one way across users is the
SECURITY DEFINER function ``analytics_portfolio_series`` (timescale/0007), which
the worker reads every portfolio's value series through.
"""
