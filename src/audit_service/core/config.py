"""Settings from the environment; fail fast on anything unsafe outside development."""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from audit_service.kit.schemas import check_time_zone

VAR_DIR = Path("var")

# Values people copy from tutorials; refusing them outside development is the point.
_PLACEHOLDER_SECRETS = {"", "changeme", "secret", "your_secret_key", "your_jwt_secret_key"}


def _default_database_url() -> str:
    return f"sqlite+aiosqlite:///{VAR_DIR / 'audit.db'}"


# A note verifier key: <name>+<8 hex key ID>+<base64 of a type byte and 32 key bytes>.
_VKEY = re.compile(r"[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUDIT_", extra="ignore", frozen=True, populate_by_name=True
    )

    env: Literal["development", "production"] = "development"
    database_url: str = Field(
        default_factory=_default_database_url, validation_alias="DATABASE_URL"
    )
    host: str = Field(default="127.0.0.1", validation_alias="HOST")
    port: int = Field(default=8000, ge=1, le=65535, validation_alias="PORT")

    # SecretStr: never shown by repr(), str() or a validation error's input echo.
    jwt_secret: SecretStr = SecretStr("")
    access_token_ttl: int = Field(default=3600, ge=60, le=86400, description="seconds")

    # Comma-separated addresses or CIDRs whose Forwarded/X-Forwarded-For we believe.
    trusted_proxies: str = ""
    # The one header those proxies write (the other is never read: a client could send it).
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"

    rate_limit_storage: str = "memory://"
    login_rate_limit: str = "20/minute"
    predict_rate_limit: str = "50/hour"
    default_rate_limit: str = "1000/minute"
    # Per API key, per request (a batch of 1,000 events is one request).
    ingest_rate_limit: str = "5000/second"
    # Per client IP on /events and /events/batch, counted before the key is verified, so
    # forged keys cannot flood the record. As high as one key's limit by default (a NAT may
    # hold several services); lower it where callers are few.
    ingest_ip_rate_limit: str = "5000/second"
    login_lockout_failures: int = Field(default=5, ge=1)
    login_lockout_window: int = Field(default=900, ge=1, description="seconds")

    record_requests: bool = True
    bootstrap_admin_username: str = "admin"
    bootstrap_admin_password: SecretStr | None = None

    # Log lines: JSON in production, text in development, unless set (AUDIT_LOG_FORMAT).
    log_format: Literal["json", "text"] | None = None
    # Bearer token GET /metrics asks for; unset: /metrics is open (keep it off the internet).
    metrics_token: SecretStr | None = None

    # Distinct actions one API-key name (an event `source`) may introduce; past it, events
    # with a new action are refused (422), so no key can grow /admin/actions without bound.
    max_actions_per_source: int = Field(default=500, ge=1)

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # All request headers together (names and values); more is refused with 431.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)

    # Comma-separated browser origins allowed to call the API (CORS); empty: CORS off.
    cors_origins: str = ""
    # Exports in flight per process: each holds a database connection for its whole stream.
    max_concurrent_exports: int = Field(default=4, ge=1)
    # PostgreSQL: how long a process may keep a user, API key, token revocation or action
    # schema it read (core/cache.py). Changes reach every process within milliseconds by
    # LISTEN/NOTIFY; this bounds staleness if the notices stop unnoticed. 0: no cache.
    cache_seconds: float = Field(default=2.0, ge=0, le=60, description="seconds")

    # Background jobs (core/jobs.py): `serve` runs them in-process unless this is false (then
    # run `audit-service worker` somewhere); any number of processes may run them.
    run_jobs: bool = True
    job_lease_seconds: float = Field(default=30.0, ge=1, le=3600, description="seconds")
    job_stop_timeout: float = Field(default=10.0, ge=0, le=600, description="seconds")
    housekeeping_interval: float = Field(default=3600.0, ge=1, description="seconds")

    # The tamper-evident log (integrity/): the Ed25519 key that signs checkpoints, in Go's
    # note format `PRIVATE+KEY+<name>+<id>+<base64>`; required in production, generated under
    # ./var/ in development (`audit-service keygen` makes one).
    log_signing_key: SecretStr = SecretStr("")
    # The checkpoints' origin line; empty: `<hostname>/audit-service/<random>`, chosen once
    # and kept in the database (a log never changes its name).
    log_origin: str = Field(default="", max_length=300)
    # Verifier keys (`<name>+<id>+<base64>`, comma-separated) of signing keys rotated out:
    # the checkpoints they signed before the rotation still verify (the daily verify job,
    # `audit-service verify` without --vkey). Public keys: nothing to keep secret.
    log_retired_vkeys: str = Field(default="", max_length=10_000)
    sequencer_interval: float = Field(default=0.2, gt=0, le=0.25, description="seconds")
    checkpoint_interval: float = Field(default=1.0, ge=0.1, le=60, description="seconds")
    checkpoint_idle_interval: float = Field(default=60.0, ge=1, le=3600, description="seconds")
    # How often a checkpoint is also written as an `integrity.checkpoint` event (so it
    # leaves the box with every export and forward).
    checkpoint_event_interval: float = Field(default=300.0, ge=1, description="seconds")
    # `integrity.verify` (integrity/verify_jobs.py): a full verification of the log every
    # `verify_interval` (the first one that long after the first checkpoint), runs asked for
    # at POST /admin/integrity/verify picked up within `verify_poll_interval`, each spread
    # over `verify_jobs` processes.
    verify_interval: float = Field(default=86400.0, ge=1, description="seconds")
    verify_poll_interval: float = Field(default=5.0, gt=0, le=3600, description="seconds")
    verify_jobs: int = Field(default=1, ge=1, le=64)
    # Postgres kills a session idle inside a transaction after this long (0: never): such a
    # transaction holds back the sequencer's horizon and every consumer of the log.
    idle_in_transaction_timeout: float = Field(default=60.0, ge=0, description="seconds")
    # Statistics (stats/): the `stats.rollup` job reads up to `stats_rollup_batch` new log
    # positions per round, and waits `stats_rollup_interval` between rounds once caught up
    # (a committed event shows in the statistics within about sequencer + this interval).
    # `stats_default_tz`: the IANA zone of statistics whose request names no `tz`.
    # `stats_rollup_enabled` false leaves the job out (the statistics stop moving): for
    # measuring what the job costs ingest (bench/stats.py ingest), or a replica that must not
    # run it.
    stats_rollup_enabled: bool = True
    stats_rollup_interval: float = Field(default=0.5, gt=0, le=1, description="seconds")
    stats_rollup_batch: int = Field(default=5000, ge=1, le=50_000)
    stats_default_tz: str = Field(default="UTC", max_length=64)
    # Scheduled e-mail reports (reports/) and outbound mail (notifications/email.py).
    # `smtp_url`: smtp://[user:password@]host[:port] (STARTTLS when the server offers it),
    # smtp+starttls://… (STARTTLS required), smtps://… (TLS from the first byte); unset: reports
    # can be scheduled and previewed, and each send is recorded as failed ("no SMTP server").
    smtp_url: SecretStr | None = None
    smtp_from: str = Field(default="audit-service@localhost", min_length=3, max_length=254)
    smtp_timeout: float = Field(default=30.0, gt=0, le=600, description="seconds")
    # A PEM file of CAs to trust for the SMTP server's certificate (default: the system's).
    smtp_ca_file: str | None = None
    # Where people reach this service (https://audit.example.com): reports link to its console.
    public_url: str | None = Field(default=None, max_length=500)
    report_poll_interval: float = Field(default=30.0, gt=0, le=3600, description="seconds")
    # Retention (retention/): where archive segments are written, and how often the leased
    # `retention.run` job runs its steps (archive, then purge and anonymise).
    archive_dir: Path = Path("var/archive")
    retention_interval: float = Field(default=86400.0, gt=0, description="seconds")
    # A copy of every segment and manifest in an S3-compatible bucket (retention/upload.py),
    # off while no bucket is set. The endpoint defaults to AWS's of the region; path-style
    # URLs (<endpoint>/<bucket>/<key>). The keys: required outside development; there, unset,
    # a placeholder pair that local test servers (moto) accept.
    archive_s3_url: str | None = Field(default=None, max_length=500)
    archive_s3_bucket: str | None = Field(default=None, max_length=63)
    archive_s3_prefix: str = Field(default="", max_length=500)
    archive_s3_region: str = Field(default="us-east-1", max_length=64)
    archive_s3_access_key_id: SecretStr | None = None
    archive_s3_secret_access_key: SecretStr | None = None
    archive_s3_timeout: float = Field(default=60.0, gt=0, le=3600, description="seconds")
    # A failed send is retried after report_retry_base · 2^(attempt-1) seconds (≤ 1 h), up to
    # report_max_attempts tries; then the run is failed and `report.failed` recorded.
    report_max_attempts: int = Field(default=5, ge=1, le=50)
    report_retry_base: float = Field(default=60.0, gt=0, le=3600, description="seconds")
    # Daily reports list the IPs with more failed logins than this in the day.
    report_failed_login_threshold: int = Field(default=5, ge=0)
    # Detections (detections/): the `detections.evaluate` job reads up to `detections_batch`
    # new log positions per round and waits `detections_poll_interval` once caught up.
    # `detections_trusted_cidrs`: comma list of networks (and loopback, always) whose login
    # attempts no rule counts. `detections_login_actions`: which actions are a source's login
    # success and failure, `source:success_action:failure_action,…` (any other source:
    # auth.login / auth.login_failed). `detections_tz`: the zone of the daily rules' days.
    detections_enabled: bool = True
    detections_poll_interval: float = Field(default=1.0, gt=0, le=3600, description="seconds")
    detections_batch: int = Field(default=2000, ge=1, le=50_000)
    detections_trusted_cidrs: str = Field(default="", max_length=4000)
    detections_login_actions: str = Field(default="", max_length=4000)
    detections_tz: str = Field(default="UTC", max_length=64)
    # Forwarding to SIEMs (forwarding/): the `forwarding.deliver` job looks for new events
    # every `forward_poll_interval`; a destination failing for `forward_failing_after` is
    # `failing` (and a `forwarding.failing` event says so); retries back off from
    # `forward_backoff_base` to `forward_backoff_max` (full jitter, Retry-After honoured).
    # `forward_allow_private`: "true", or comma-separated CIDRs that destinations may resolve
    # to although private/loopback/link-local (refused otherwise); plain http:// only there.
    forward_poll_interval: float = Field(default=0.2, gt=0, le=60, description="seconds")
    forward_failing_after: float = Field(default=300.0, gt=0, description="seconds")
    forward_backoff_base: float = Field(default=1.0, gt=0, le=60, description="seconds")
    forward_backoff_max: float = Field(default=300.0, gt=0, le=3600, description="seconds")
    forward_timeout: float = Field(default=15.0, gt=0, le=120, description="seconds")
    forward_allow_private: str = Field(default="", max_length=2000)
    # A deliverer's claim on a destination (renewed at every batch; a killed process's
    # destinations are taken over once it runs out).
    forward_lease_seconds: float = Field(default=60.0, ge=1, le=3600, description="seconds")
    # Fewer than a full batch pending: wait up to this long for more before sending
    # (1,000 events/s become ~5 requests/s); a full batch is never held back. 0: off.
    forward_batch_window_ms: int = Field(default=200, ge=0, le=5000, description="ms")
    # HEC indexer acknowledgement (destinations with hec_ack): poll every this long, and
    # send the batch again when it is not acknowledged within the timeout.
    forward_hec_ack_poll: float = Field(default=0.5, gt=0, le=60, description="seconds")
    forward_hec_ack_timeout: float = Field(default=30.0, gt=0, le=3600, description="seconds")
    # Alert notifications (notifications/): Alertmanager-style grouping per channel and
    # group (rule + tenant): the first notification of a group after `alert_group_wait`,
    # later changes at most every `alert_group_interval`, a still-open alert again after
    # `alert_repeat_interval`. The `notifications.deliver` job polls every
    # `alert_poll_interval`; failed sends back off from `alert_backoff_base` to
    # `alert_backoff_max` (full jitter); a deliverer's claim on a group lasts
    # `alert_claim_seconds` (longer than any send may take).
    alert_group_wait: float = Field(default=30.0, ge=0, le=3600, description="seconds")
    alert_group_interval: float = Field(default=300.0, ge=0, le=86400, description="seconds")
    alert_repeat_interval: float = Field(default=14400.0, gt=0, le=604800, description="seconds")
    alert_poll_interval: float = Field(default=1.0, gt=0, le=60, description="seconds")
    alert_backoff_base: float = Field(default=1.0, gt=0, le=60, description="seconds")
    alert_backoff_max: float = Field(default=300.0, gt=0, le=3600, description="seconds")
    alert_claim_seconds: float = Field(default=120.0, gt=0, le=3600, description="seconds")
    # Retention, forgetting half (retention/anonymize.py, erasure.py): IPs become their /24
    # (/48) and user agents their family this many days after they were recorded, then the
    # day's commitment key is destroyed (0: never). `pseudonym_key`: the secret behind
    # data-subject pseudonyms (HMAC); unset, one is derived from the log signing key.
    ip_anonymize_after_days: int = Field(default=30, ge=0, le=36500, description="days")
    user_agent_anonymize_after_days: int = Field(default=30, ge=0, le=36500, description="days")
    pseudonym_key: SecretStr | None = None
    # Rows per call of the restricted delete/rewrite path (each call is its own transaction).
    retention_batch: int = Field(default=5000, ge=1, le=100_000)

    @field_validator(
        "login_rate_limit",
        "predict_rate_limit",
        "default_rate_limit",
        "ingest_rate_limit",
        "ingest_ip_rate_limit",
    )
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)  # "50/hour", "20 per minute": refuse anything limits cannot read
        except ValueError:
            raise ValueError("not a rate limit: write N/period, e.g. 50/hour") from None
        return value

    @field_validator("detections_trusted_cidrs")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"not an IP network: {part!r} (e.g. 10.0.0.0/8)") from None
        return value

    @field_validator("detections_login_actions")
    @classmethod
    def _login_actions(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            if len(part.split(":")) != 3 or not all(part.split(":")):
                raise ValueError(
                    f"{part!r}: write source:success_action:failure_action, e.g. "
                    "lms:user.login:user.login_failed"
                )
        return value

    @field_validator("stats_default_tz", "detections_tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        check_time_zone(value)
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            from audit_service.kit.smtp import SmtpTarget

            SmtpTarget.parse(value.get_secret_value())  # its messages never quote the URL
        return value if value is not None and value.get_secret_value() else None

    @field_validator("forward_allow_private")
    @classmethod
    def _forward_allow_private(cls, value: str) -> str:
        import ipaddress

        value = value.strip()
        if value.lower() in ("", "true", "false"):
            return value.lower()
        for part in value.split(","):
            try:
                ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                raise ValueError("must be true, false, or comma-separated CIDRs") from None
        return value

    @field_validator("archive_s3_url")
    @classmethod
    def _archive_s3_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        from audit_service.kit.s3 import parse_endpoint

        return parse_endpoint(value)

    @field_validator("archive_s3_bucket")
    @classmethod
    def _archive_s3_bucket(cls, value: str | None) -> str | None:
        if not value:
            return None
        # S3's bucket naming rules (the DNS-compatible ones every store accepts).
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value) or ".." in value:
            raise ValueError("not a bucket name: 3-63 lower-case letters, digits, dots and hyphens")
        return value

    @field_validator("archive_s3_prefix")
    @classmethod
    def _archive_s3_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if value and (not re.fullmatch(r"[A-Za-z0-9!_.*'()/-]+", value) or "//" in value):
            raise ValueError(
                "a key prefix: letters, digits and !_.*'()- separated by single slashes"
            )
        return f"{value}/" if value else ""

    @field_validator("archive_s3_region")
    @classmethod
    def _archive_s3_region(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9-]{1,64}", value):
            raise ValueError("not a region name, e.g. eu-west-1")
        return value

    @model_validator(mode="after")
    def _archive_s3_complete(self) -> Settings:
        if self.archive_s3_url and not self.archive_s3_bucket:
            raise ValueError("AUDIT_ARCHIVE_S3_URL is set but AUDIT_ARCHIVE_S3_BUCKET is not")
        keys = (self.archive_s3_access_key_id, self.archive_s3_secret_access_key)
        given = [k is not None and bool(k.get_secret_value()) for k in keys]
        if given[0] != given[1]:
            raise ValueError(
                "set both AUDIT_ARCHIVE_S3_ACCESS_KEY_ID and AUDIT_ARCHIVE_S3_SECRET_ACCESS_KEY "
                "or neither"
            )
        if self.archive_s3_bucket and self.env == "production" and not all(given):
            raise ValueError(
                "AUDIT_ARCHIVE_S3_ACCESS_KEY_ID and AUDIT_ARCHIVE_S3_SECRET_ACCESS_KEY must be "
                "set when AUDIT_ARCHIVE_S3_BUCKET is and AUDIT_ENV=production"
            )
        return self

    @property
    def archive_s3_endpoint(self) -> str | None:
        """The endpoint the archive uploads to; None: uploads are off."""
        if not self.archive_s3_bucket:
            return None
        return self.archive_s3_url or f"https://s3.{self.archive_s3_region}.amazonaws.com"

    def archive_s3_keys(self) -> tuple[str, str]:
        """(access key id, secret); in development, unset, a placeholder pair."""
        ak, sk = self.archive_s3_access_key_id, self.archive_s3_secret_access_key
        if ak is not None and sk is not None and ak.get_secret_value():
            return ak.get_secret_value(), sk.get_secret_value()
        return "audit-service-development", "audit-service-development"

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be an http(s) URL without query, e.g. https://audit.example.com")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        # The engines are async: a plain `postgresql://` would load psycopg and fail with
        # "No module named psycopg", which says nothing about the URL. The messages never
        # quote the URL: it may hold a password.
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(
                "DATABASE_URL is not a database URL (e.g. postgresql+asyncpg://user@host/db)"
            ) from None
        # From the text: SQLAlchemy would import a driver to name the default one.
        backend, _, driver = url.drivername.partition("+")
        backend = "postgresql" if backend == "postgres" else backend
        wanted = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}.get(backend)
        if wanted is None:
            raise ValueError(
                f"DATABASE_URL names the unsupported database '{backend}': use "
                "postgresql+asyncpg://… or sqlite+aiosqlite:///…"
            )
        if driver != wanted:
            raise ValueError(
                f"DATABASE_URL must use the async driver: {backend}+{wanted}://… "
                f"(not {url.drivername}://…)"
            )
        return value

    @field_validator("forwarded_header", mode="before")
    @classmethod
    def _lower_header(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        for number, part in enumerate(_split(value), 1):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"entry {number} is not an IP address or CIDR") from None
        return value

    @field_validator("cors_origins")
    @classmethod
    def _valid_origins(cls, value: str) -> str:
        for origin in _split(value):
            # An origin is scheme://host[:port] exactly: a path or a trailing slash never
            # matches the browser's Origin header, so the setting would silently do nothing.
            scheme, sep, rest = origin.partition("://")
            if origin != "*" and (
                scheme not in ("http", "https") or not sep or not rest or "/" in rest
            ):
                raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
        return value

    @property
    def cors_origin_list(self) -> list[str]:
        return _split(self.cors_origins)

    @model_validator(mode="after")
    def _secret_required_in_production(self) -> Settings:
        secret = self.jwt_secret.get_secret_value()
        if self.env == "production" and (
            secret.strip().lower() in _PLACEHOLDER_SECRETS or len(secret) < 32
        ):
            raise ValueError(
                "AUDIT_JWT_SECRET must be set to a random value of at least 32 characters "
                "when AUDIT_ENV=production"
            )
        return self

    @field_validator("log_retired_vkeys")
    @classmethod
    def _retired_vkeys_parse(cls, value: str) -> str:
        # The shape only (the key itself is checked by integrity/, which core cannot import).
        for vkey in (v.strip() for v in value.split(",")):
            if vkey and not _VKEY.fullmatch(vkey):
                raise ValueError(
                    f"AUDIT_LOG_RETIRED_VKEYS: {vkey[:60]!r} is not a verifier key "
                    "(<name>+<key ID>+<base64>)"
                )
        return value

    @model_validator(mode="after")
    def _log_key_required_in_production(self) -> Settings:
        if self.env == "production" and not self.log_signing_key.get_secret_value():
            raise ValueError(
                "AUDIT_LOG_SIGNING_KEY must be set when AUDIT_ENV=production "
                "(make one with `audit-service keygen`)"
            )
        return self

    @model_validator(mode="after")
    def _record_required_in_production(self) -> Settings:
        # Without request recording the service keeps no record of what it does: the one
        # thing it is for. Allowed in development (benchmarks compare with it off).
        if self.env == "production" and not self.record_requests:
            raise ValueError(
                "AUDIT_RECORD_REQUESTS=false is refused when AUDIT_ENV=production: "
                "it disables the audit record of every request"
            )
        return self

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(p, strict=False) for p in _split(self.trusted_proxies))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def signing_key(self) -> str:
        """The JWT key; in development one is generated once and kept under ./var/."""
        if secret := self.jwt_secret.get_secret_value():
            return secret
        # An empty or truncated file (a crash between create and write) is replaced: HMAC
        # with an empty key would make every token forgeable.
        key = _dev_secret("jwt_secret", lambda: secrets.token_urlsafe(48), lambda k: len(k) >= 32)
        logging.getLogger(__name__).warning(
            "AUDIT_JWT_SECRET is not set: using a development key in %s. "
            "Set AUDIT_JWT_SECRET (and AUDIT_ENV=production) in production.",
            VAR_DIR / "jwt_secret",
        )
        return key

    def log_key(self, generate: Callable[[], str], valid: Callable[[str], bool]) -> str:
        """AUDIT_LOG_SIGNING_KEY; in development one is generated once and kept under ./var/
        (production refuses to start without it)."""
        if key := self.log_signing_key.get_secret_value():
            return key
        return _dev_secret("log_signing_key", generate, valid)


def _dev_secret(name: str, make: Callable[[], str], valid: Callable[[str], bool]) -> str:
    """A development secret kept in ./var/<name> (mode 0600), made on first use."""
    key_file = VAR_DIR / name
    if key_file.exists():
        key = key_file.read_text().strip()
        if valid(key):
            return key
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = make()
    key_file.unlink(missing_ok=True)  # so touch() really creates it with mode 0600
    key_file.touch(mode=0o600)
    key_file.write_text(key)
    return key


def settings_error_text(exc: ValidationError) -> str:
    """A settings error for people: each variable and what is wrong, never the value given
    (pydantic's default text quotes the input, and the input may be a secret)."""
    aliases = {
        name: field.validation_alias
        for name, field in Settings.model_fields.items()
        if isinstance(field.validation_alias, str)
    }
    lines = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = [str(part) for part in error["loc"]]
        name = loc[0] if loc else ""
        if name in aliases.values():
            where = name
        elif name in Settings.model_fields:
            where = aliases.get(name) or f"AUDIT_{name.upper()}"
        else:
            where = "settings"
        lines.append(f"  {where}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid settings:\n" + "\n".join(lines)


def _split(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]
