"""create_app(): lifespan (engine, recorder writer, predictor), middleware, handlers, routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware

from audit_service import __version__
from audit_service.activity.endpoints import recipients_router
from audit_service.activity.endpoints import router as activity_router
from audit_service.audit_log import repository as audit_repository
from audit_service.audit_log.context import SYSTEM, system_event
from audit_service.audit_log.middleware import Recorder, RecorderMiddleware
from audit_service.audit_log.writer import GroupCommitWriter
from audit_service.auth import service as auth_service
from audit_service.auth.dependencies import get_current_user, limit_ingestion
from audit_service.auth.endpoints import admin_router as users_router
from audit_service.auth.endpoints import api_keys_router
from audit_service.auth.endpoints import public_router as login_router
from audit_service.auth.endpoints import router as auth_router
from audit_service.auth.jobs import housekeeping_jobs
from audit_service.console.app import install_console
from audit_service.console.headers import ConsoleHeadersMiddleware
from audit_service.core.cache import SESSION_KEY as CACHE_KEY
from audit_service.core.cache import SharedCache
from audit_service.core.config import Settings
from audit_service.core.db import create_engine, create_sessionmaker, is_postgres
from audit_service.core.docs import install_offline_docs
from audit_service.core.errors import install_error_handlers, problem_responses
from audit_service.core.jobs import Job, JobRuntime
from audit_service.core.metrics import Metrics, RequestMetricsMiddleware
from audit_service.core.middleware import BodyLimitMiddleware
from audit_service.core.openapi import install_contract
from audit_service.core.ratelimit import RateLimiter
from audit_service.detections.channel_endpoints import router as alert_channels_router
from audit_service.detections.endpoints import router as detections_router
from audit_service.detections.jobs import detection_jobs
from audit_service.forwarding.endpoints import router as forwarding_router
from audit_service.forwarding.jobs import forwarding_jobs
from audit_service.health.endpoints import router as health_router
from audit_service.ingestion.endpoints import admin_router as actions_router
from audit_service.ingestion.endpoints import router as ingestion_router
from audit_service.integrity.endpoints import router as integrity_router
from audit_service.integrity.jobs import log_jobs
from audit_service.integrity.verify_endpoints import router as verify_router
from audit_service.integrity.verify_jobs import verify_jobs
from audit_service.jobs.endpoints import router as jobs_router
from audit_service.maintenance.dependencies import maintenance_gate
from audit_service.maintenance.endpoints import router as maintenance_router
from audit_service.maintenance.service import MaintenanceCache
from audit_service.notifications.jobs import notification_jobs
from audit_service.prediction.endpoints import router as prediction_router
from audit_service.prediction.model import load_model
from audit_service.reports.endpoints import router as reports_router
from audit_service.reports.jobs import report_jobs
from audit_service.retention.endpoints import router as retention_router
from audit_service.retention.erasure_endpoints import router as erasures_router
from audit_service.retention.jobs import retention_jobs
from audit_service.stats.endpoints import router as stats_router
from audit_service.stats.jobs import stats_jobs

log = logging.getLogger(__name__)

DESCRIPTION = """
A trustworthy record of who did what, from where and when.

Every request this service handles is itself recorded (actor, IP, user agent, outcome)
before its response is sent. Errors are RFC 9457 `application/problem+json`.
Each operation's `x-audit-action` names the event it records.
"""


async def bootstrap_admin(app: FastAPI, settings: Settings) -> None:
    """First start: make an admin if there is none, and say its one-time password once."""
    async with app.state.sessionmaker() as session:
        created = await auth_service.ensure_bootstrap_admin(
            session, settings.bootstrap_admin_username, settings.bootstrap_admin_password
        )
        if created is None:
            return
        user, generated = created
        await audit_repository.insert_events(
            session,
            [
                system_event(
                    "user.created",
                    "users",
                    f"Bootstrap admin '{user.username}' created",
                    target_type="user",
                    target_id=str(user.id),
                    actor=SYSTEM,
                )
            ],
        )
        await session.commit()
    if generated:
        # Deliberately print, never log: the password must not end up in log storage.
        print(
            f"\n  Bootstrap admin created: username '{user.username}', one-time password "
            f"'{generated}'\n  Log in and change it with POST /me/password "
            "(current_password, new_password); it is not shown again.\n",
            flush=True,
        )


def background_jobs(settings: Settings) -> list[Job]:
    """Every background job, for `serve` (in-process) and `worker` alike."""
    return [
        *log_jobs(settings),
        *verify_jobs(settings),
        *stats_jobs(settings),
        *report_jobs(settings),
        *detection_jobs(settings),
        *notification_jobs(settings),
        *forwarding_jobs(settings),
        *retention_jobs(settings),
        *housekeeping_jobs(settings.housekeeping_interval),
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database_url,
            idle_in_transaction_timeout=settings.idle_in_transaction_timeout,
        )
        app.state.engine = engine
        # Only PostgreSQL can tell the other processes what changed (NOTIFY): on SQLite the
        # cache never turns on (core/cache.py).
        cache = app.state.cache = SharedCache(settings.cache_seconds)
        app.state.sessionmaker = create_sessionmaker(engine, info={CACHE_KEY: cache})
        app.state.signing_key = settings.signing_key()
        app.state.rate_limiter = RateLimiter(settings.rate_limit_storage)
        app.state.predictor = load_model()
        writer = GroupCommitWriter(engine, on_batch=app.state.metrics.observe_batch)
        app.state.metrics.watch(writer=writer, engine=engine, cache=cache)
        writer.start()
        app.state.maintenance = MaintenanceCache(app.state.sessionmaker)
        app.state.recorder = Recorder(app.state.sessionmaker, writer, settings.record_requests)
        listening = (
            asyncio.create_task(cache.listen(engine), name="cache-listener")
            if is_postgres(engine) and settings.cache_seconds > 0
            else None
        )
        jobs: JobRuntime | None = None
        try:
            await bootstrap_admin(app, settings)
            if settings.run_jobs:
                jobs = JobRuntime(
                    engine, background_jobs(settings), lease_seconds=settings.job_lease_seconds
                )
                await jobs.start()
            yield
        finally:
            if jobs is not None:
                await jobs.stop(settings.job_stop_timeout)
            await writer.stop()
            if listening is not None:
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listening
            await engine.dispose()

    app = FastAPI(
        title="audit-service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_offline_docs
        redoc_url=None,
        openapi_tags=[
            {"name": "auth", "description": "Log in and out"},
            {"name": "users", "description": "User administration (admin)"},
            {"name": "activity", "description": "The activity history (admin, auditor)"},
            {"name": "prediction", "description": "The iris model"},
            {"name": "ingestion", "description": "Events posted by other services (API key)"},
            {"name": "api-keys", "description": "Service API keys (admin)"},
            {"name": "actions", "description": "Known actions and their metadata schemas"},
            {"name": "maintenance", "description": "Maintenance mode (admin)"},
            {"name": "jobs", "description": "Background jobs (admin, auditor)"},
            {"name": "stats", "description": "Statistics from the rollups (admin, auditor)"},
            {"name": "reports", "description": "Scheduled e-mail reports"},
            {
                "name": "retention",
                "description": "Retention rules, legal holds, signed archives (admin, auditor)",
            },
            {"name": "detections", "description": "Alerts and detection rules (admin, auditor)"},
            {
                "name": "forwarding",
                "description": "Forwarding the log to SIEMs: webhook, syslog, Splunk HEC (admin)",
            },
            {
                "name": "integrity",
                "description": "The signed log: checkpoint, keys, tiles, proofs (admin, auditor)",
            },
            {
                "name": "export-recipients",
                "description": "Public keys exports can be encrypted to (admin)",
            },
            {"name": "health", "description": "Liveness, readiness, metrics (not recorded)"},
        ],
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    install_contract(app)
    # Outermost last: the recorder wraps everything, so even a 413 is recorded.
    app.add_middleware(
        BodyLimitMiddleware,
        default=settings.max_body_bytes,
        per_path={"/events/batch": settings.max_batch_body_bytes},
        max_header_bytes=settings.max_header_bytes,
    )
    app.add_middleware(RecorderMiddleware)
    # Outside the recorder: the console's security headers on every /console response.
    app.add_middleware(ConsoleHeadersMiddleware)
    # Outside the recorder: counts the status the client really got (a 503 replacement too).
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    if settings.cors_origin_list:
        # Outside the recorder: a preflight is answered here and is not an event (without
        # this it reached the router and was recorded as a 405).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Idempotency-Key"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "Content-Disposition",
                "X-Export-Exported-By",
                "X-Export-Exported-At",
                "X-Export-Filters",
                "X-Export-Row-Count",
                "X-Export-Service-Version",
            ],
            max_age=600,
        )
    install_offline_docs(app)

    # Public routes are mounted explicitly; everything else needs a principal.
    app.include_router(health_router)
    app.include_router(login_router)
    protected = [Depends(get_current_user)]  # the default rate limit, then authentication
    # Maintenance mode answers 503 on these (admins and /admin/* excepted): not on health,
    # login or ingestion, which are mounted without it.
    gated = [*protected, Depends(maintenance_gate)]
    for router in (auth_router, prediction_router, activity_router, users_router):
        app.include_router(router, dependencies=gated, responses=problem_responses(401, 429, 503))
    for router in (
        api_keys_router,
        actions_router,
        maintenance_router,
        jobs_router,
        integrity_router,
        recipients_router,
        verify_router,
        stats_router,
        reports_router,
        # Before the alerts: /admin/alerts/{id} would take /admin/alerts/channels.
        alert_channels_router,
        detections_router,
        forwarding_router,
        retention_router,
        erasures_router,
    ):
        app.include_router(router, dependencies=gated, responses=problem_responses(401, 429, 503))
    # The admin console: its own sign-in (a session cookie no API route accepts).
    install_console(app)
    # Other services authenticate with an API key instead (limited per key once verified).
    app.include_router(
        ingestion_router,
        dependencies=[Depends(limit_ingestion)],
        responses=problem_responses(401, 429),
    )
    return app
