"""Settings groups of the HTTP services (``services/``): where they listen, their
tokens, sessions and database roles (``NEXANEST_SERVICES__*``), the notifications
service (``NEXANEST_NOTIFICATIONS__*``) and Alertmanager's webhook
(``NEXANEST_ALERTING__*``). Part of the one ``Settings`` object
(``pipeline/settings.py``), so that every process reads one configuration; the
pipeline's hot path never reads them."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr

from nexanest.pipeline.errors import ConfigurationError


class AlertingSettings(BaseModel):
    """Where Alertmanager posts the alerts Prometheus fires. Read by
    ``deploy/local/prometheus.sh`` (from the environment or ``.env``, like every
    ``NEXANEST_*``) when it writes Alertmanager's configuration: each receiver of
    the route tree (``critical``, ``warning``) posts Alertmanager's webhook JSON
    there. It is the hook for the notifications service's receiver; unset, alerts
    are only listed by Alertmanager (``amtool alert query``)."""

    #: ``NEXANEST_ALERTING__WEBHOOK_URL``; secret because a URL may carry a token.
    webhook_url: SecretStr | None = None


class NotificationsSettings(BaseModel):
    """The notifications service (``services/notifications/``): its Redis keys, its
    evaluator and delivery worker, and webhook delivery (``NEXANEST_NOTIFICATIONS__*``)."""

    #: Prefix of its Redis keys (queue, processing lists, retries, worker heartbeats, in
    #: ``redis.db_notifications``) and of its pub/sub channel of alert changes.
    key_prefix: str = "notifications:"
    #: Seals the webhook signing secrets stored in the database (AES-256-GCM): 64 hex
    #: digits. Unset: derived from ``services.token_secret`` (then rotating that secret
    #: makes the stored webhook secrets unreadable: endpoints must be made again).
    secret_key: SecretStr | None = None
    #: ``nexanest serve notifications`` runs the alert evaluator and the delivery worker
    #: itself; ``nexanest serve notifications-worker`` runs the worker alone.
    evaluator_in_service: bool = True
    worker_in_service: bool = True
    #: Deliveries one worker process makes at once.
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    #: A worker refreshes its heartbeat this often; a processing list whose worker
    #: missed three is put back on the queue by another (or the next) worker.
    worker_heartbeat_s: float = Field(default=5.0, gt=0, le=300)
    #: The evaluator re-reads every enabled alert this often, besides the change messages.
    index_refresh_s: float = Field(default=60.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    #: Allow webhook URLs on loopback, private or link-local addresses (a local
    #: receiver in development); off, they are refused (``destinations.py``).
    webhook_allow_private: bool = False
    #: Attempts of one webhook delivery before it is given up (``failed``).
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    #: An endpoint whose deliveries failed this many times in a row is disabled and its
    #: owner told in the inbox.
    webhook_disable_after_failures: int = Field(default=20, ge=1, le=10_000)
    #: Retry delays: exponential from the first, capped, jittered (``pipeline/retry.py``).
    retry_initial_s: float = Field(default=5.0, gt=0)
    retry_max_s: float = Field(default=3600.0, gt=0)
    #: Alerts one user may have.
    max_alerts_per_user: int = Field(default=200, ge=1, le=10_000)
    max_webhooks_per_user: int = Field(default=10, ge=1, le=100)
    #: The worker follows the system events topic and sends these types to the admins
    #: subscribed to operational alerts (empty: it does not follow the topic).
    ops_event_types: list[str] = Field(default_factory=lambda: ["dlq_burst", "lag_high", "batch_failed", "error"])


class ServicesSettings(BaseModel):
    """The HTTP services (``services/``): where they listen, and their access tokens.

    Ports are the seed's. The token secret signs the access tokens the services
    accept (``services/tokens.py``); ``deploy/local/env.sh`` writes a random one
    into a new ``.env``. It has no default: an older ``.env`` without it still
    serves the pipeline, and only a service refuses to start
    (``token_secret_or_raise``). Nothing here is validated as a whole: pydantic's
    errors would quote the group's input, secret included."""

    host: str = "127.0.0.1"
    auth_port: int = Field(default=8001, ge=1, le=65535)
    portfolio_port: int = Field(default=8002, ge=1, le=65535)
    market_data_port: int = Field(default=8003, ge=1, le=65535)
    notifications_port: int = Field(default=8004, ge=1, le=65535)
    analytics_port: int = Field(default=8005, ge=1, le=65535)
    #: HMAC-SHA256 key of the access tokens; at least 32 characters (env.sh: 64 hex digits).
    token_secret: SecretStr | None = None
    #: How long an access token is accepted after it was issued. Lowering it also
    #: shortens tokens already issued: a token whose expiry lies further ahead is refused.
    token_lifetime_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    #: A session (``services/sessions.py``) ends after this long without a request.
    session_idle_s: int = Field(default=30 * 60, ge=60, le=7 * 24 * 3600)
    #: ... and this long after the login, however busy it is: a stolen token is
    #: good for at most this long. A session never outlives either.
    session_absolute_s: int = Field(default=12 * 3600, ge=300, le=30 * 24 * 3600)
    #: Failed logins (``services/auth/throttle.py``) counted per account and per
    #: client address within a window; past a limit, logins answer 429 until the
    #: window ends. The address limit is higher: many users may share one address.
    login_failures_per_account: int = Field(default=5, ge=1, le=1000)
    login_failures_per_address: int = Field(default=50, ge=1, le=100_000)
    login_failure_window_s: int = Field(default=15 * 60, ge=1, le=24 * 3600)
    #: Each service connects as a login role of its own that owns nothing, so
    #: that the row-level security of its tables binds it (deploy/local creates
    #: the roles; the owner roles of ``postgres``/``timescale`` only migrate).
    auth_dsn: SecretStr = SecretStr("postgresql://nexanest_auth@127.0.0.1:5432/auth")
    portfolio_dsn: SecretStr = SecretStr("postgresql://nexanest_portfolio@127.0.0.1:5432/portfolio")
    #: The portfolio service's role on TimescaleDB, where the snapshots are.
    portfolio_snapshots_dsn: SecretStr = SecretStr("postgresql://nexanest_portfolio@127.0.0.1:5433/timescale")
    #: Read-only: SELECT on the market data tables and nothing else.
    market_data_dsn: SecretStr = SecretStr("postgresql://nexanest_market_data@127.0.0.1:5433/timescale")
    #: The analytics service: its saved reports on PostgreSQL, and on TimescaleDB
    #: it reads the bars and snapshots and writes ``analytics_metrics``.
    analytics_dsn: SecretStr = SecretStr("postgresql://nexanest_analytics@127.0.0.1:5432/analytics")
    analytics_timescale_dsn: SecretStr = SecretStr("postgresql://nexanest_analytics@127.0.0.1:5433/timescale")
    #: The notification service: alerts, inbox, webhooks and deliveries.
    notifications_dsn: SecretStr = SecretStr("postgresql://nexanest_notifications@127.0.0.1:5432/notifications")
    pool_max_size: int = Field(default=8, ge=1)
    #: Request bodies over this many bytes are refused with 413 (``services/problems.py``).
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    #: Portfolio valuation: a quote whose tick is older than this is reported as
    #: stale, with its age, and its price is not used.
    portfolio_quote_max_age_s: float = Field(default=60.0, gt=0)
    #: How long a portfolio's valuation stays cached in Redis (``redis.db_portfolio``);
    #: a new transaction invalidates it at once. 0: no cache.
    portfolio_valuation_cache_s: float = Field(default=2.0, ge=0, le=300)
    #: The snapshot worker values every portfolio this often, at times aligned to it.
    portfolio_snapshot_interval_s: float = Field(default=60.0, ge=1, le=24 * 3600)
    #: The portfolio service runs the snapshot worker itself (a second worker,
    #: ``nexanest serve portfolio-snapshots``, writes the same snapshots once).
    portfolio_snapshots_in_service: bool = True
    #: Portfolios one user may have (bounds ``GET /portfolios``).
    portfolio_max_per_user: int = Field(default=100, ge=1, le=10_000)
    # --- analytics (services/analytics/) ---
    #: Annual risk-free rate of the Sharpe ratio, as a fraction (0.04 is 4 %).
    analytics_risk_free_rate: float = Field(default=0.0, ge=-0.5, le=1.0)
    #: The market index (a name of ``NEXANEST_INDICES``, stored in ``market_indices``)
    #: that portfolio betas are measured against; None: no beta.
    analytics_benchmark_index: str | None = Field(default=None, pattern=r"^[A-Z0-9][A-Z0-9._:/-]{0,31}$")
    #: The analytics worker computes every metric this often, at times aligned to it.
    analytics_interval_s: float = Field(default=300.0, ge=5, le=24 * 3600)
    #: The analytics service runs the worker itself (``nexanest serve analytics-worker``
    #: runs it alone; two workers write each round's rows once).
    analytics_worker_in_service: bool = True
    #: Symbols the worker covers per round: those with bars in the last day, at most this many.
    analytics_max_symbols: int = Field(default=500, ge=1, le=100_000)
    #: Prefix of the latest metrics cached in Redis ``db_analytics`` (beside the bar cache's ``bar:``).
    analytics_cache_prefix: str = Field(default="analytics:", min_length=1, max_length=64)
    #: Scheduled saved reports the worker runs per round, at most (the longest waiting
    #: first; the rest wait for the next round).
    analytics_reports_per_round: int = Field(default=200, ge=1, le=100_000)

    def dsns(self) -> dict[str, SecretStr]:
        """The DSN of each service role, by setting name."""
        return {
            "auth_dsn": self.auth_dsn,
            "portfolio_dsn": self.portfolio_dsn,
            "portfolio_snapshots_dsn": self.portfolio_snapshots_dsn,
            "market_data_dsn": self.market_data_dsn,
            "analytics_dsn": self.analytics_dsn,
            "analytics_timescale_dsn": self.analytics_timescale_dsn,
            "notifications_dsn": self.notifications_dsn,
        }

    def notifications_auth_dsn(self) -> SecretStr:
        """The notifications service's role on the auth database, where it asks which
        subscribers to operational alerts are admins now (auth/0003): the user,
        password, host and options of ``notifications_dsn`` with the database of
        ``auth_dsn``. Derived, not set: both databases are on one PostgreSQL server
        (the seed's layout), so a deployment needs no further secret."""
        notifications = urlsplit(self.notifications_dsn.get_secret_value())
        database = urlsplit(self.auth_dsn.get_secret_value()).path
        return SecretStr(urlunsplit(notifications._replace(path=database)))

    def ports(self) -> dict[str, int]:
        """The port of each service, by its name in ``nexanest serve``."""
        return {
            "auth": self.auth_port,
            "portfolio": self.portfolio_port,
            "market-data": self.market_data_port,
            "notifications": self.notifications_port,
            "analytics": self.analytics_port,
        }

    def token_secret_or_raise(self) -> SecretStr:
        """The token secret; raises ``ConfigurationError`` saying how to set it when it
        is missing (a ``.env`` written before the services existed) or too short."""
        how = (
            "add a line NEXANEST_SERVICES__TOKEN_SECRET=<at least 32 random characters> to .env "
            "(e.g. from `openssl rand -hex 32`), or set it in the environment"
        )
        if self.token_secret is None:
            raise ConfigurationError(
                "NEXANEST_SERVICES__TOKEN_SECRET is not set (a .env written before the services existed "
                f"lacks it): {how}"
            )
        if len(self.token_secret.get_secret_value()) < 32:  # never echo it, nor its length
            raise ConfigurationError(f"NEXANEST_SERVICES__TOKEN_SECRET is too short: {how}")
        return self.token_secret
