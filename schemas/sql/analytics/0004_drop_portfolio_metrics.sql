-- The analytics database holds user tables under FORCEd row-level security only (issue 12).
--
-- analytics/0001 made `portfolio_metrics`, a first sketch from before the service existed.
-- Nothing uses it: the service computes its metrics into the TimescaleDB hypertable
-- `analytics_metrics` (timescale/0007), which is where the seed documentation puts them
-- ("Analytics Service | PostgreSQL (analytics) | TimescaleDB (metrics)"); the seed names no
-- table in the analytics database. The service role was never granted it, and its row-level
-- security was ENABLEd without FORCE, with a policy without WITH CHECK, so the owner role
-- bypassed it. Dropped rather than repaired: a table no code writes or reads is only one
-- more place where user data could sit unguarded. No code of the project ever wrote a row.

DROP TABLE portfolio_metrics;
