"""Settings from the environment; fail fast on anything unsafe outside development."""

from __future__ import annotations

import ipaddress
import logging
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")

# Values people copy from tutorials; refusing them outside development is the point.
_PLACEHOLDER_SECRETS = {"", "changeme", "secret", "your_secret_key", "your_jwt_secret_key"}


def _default_database_url() -> str:
    return f"sqlite+aiosqlite:///{VAR_DIR / 'audit.db'}"


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

    jwt_secret: str = ""
    access_token_ttl: int = Field(default=3600, ge=60, le=86400, description="seconds")

    # Comma-separated addresses or CIDRs whose Forwarded/X-Forwarded-For we believe.
    trusted_proxies: str = ""

    rate_limit_storage: str = "memory://"
    login_rate_limit: str = "20/minute"
    predict_rate_limit: str = "50/hour"
    default_rate_limit: str = "1000/minute"
    # Per API key, per request (a batch of 1,000 events is one request).
    ingest_rate_limit: str = "5000/second"
    login_lockout_failures: int = Field(default=5, ge=1)
    login_lockout_window: int = Field(default=900, ge=1, description="seconds")

    record_requests: bool = True
    bootstrap_admin_username: str = "admin"
    bootstrap_admin_password: str | None = None

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)

    # Background jobs (core/jobs.py): `serve` runs them in-process unless this is false (then
    # run `audit-service worker` somewhere); any number of processes may run them.
    run_jobs: bool = True
    job_lease_seconds: float = Field(default=30.0, ge=1, le=3600, description="seconds")
    job_stop_timeout: float = Field(default=10.0, ge=0, le=600, description="seconds")
    housekeeping_interval: float = Field(default=3600.0, ge=1, description="seconds")

    @field_validator(
        "login_rate_limit", "predict_rate_limit", "default_rate_limit", "ingest_rate_limit"
    )
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        from limits import parse

        parse(value)  # "50/hour", "20 per minute": refuse anything limits cannot read
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        for part in _split(value):
            ipaddress.ip_network(part, strict=False)
        return value

    @model_validator(mode="after")
    def _secret_required_in_production(self) -> Settings:
        if self.env == "production" and (
            self.jwt_secret.strip().lower() in _PLACEHOLDER_SECRETS or len(self.jwt_secret) < 32
        ):
            raise ValueError(
                "AUDIT_JWT_SECRET must be set to a random value of at least 32 characters "
                "when AUDIT_ENV=production"
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
        if self.jwt_secret:
            return self.jwt_secret
        key_file = VAR_DIR / "jwt_secret"
        if key_file.exists():
            key = key_file.read_text().strip()
            # An empty or truncated file (a crash between create and write) is replaced:
            # HMAC with an empty key would make every token forgeable.
            if len(key) >= 32:
                return key
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        key_file.unlink(missing_ok=True)  # so touch() really creates it with mode 0600
        key_file.touch(mode=0o600)
        key_file.write_text(key)
        logging.getLogger(__name__).warning(
            "AUDIT_JWT_SECRET is not set: generated a development key in %s. "
            "Set AUDIT_JWT_SECRET (and AUDIT_ENV=production) in production.",
            key_file,
        )
        return key


def _split(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]
