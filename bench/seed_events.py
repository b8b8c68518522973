"""Realistic audit events, loaded fast: the data behind the 10-million-event benchmarks.

    /tmp/venv/bin/python bench/seed_events.py --database-url URL --events 10000000 --drop-indexes

The database must be migrated (`audit-service migrate`); events are appended to whatever is in
`audit_event` already. On PostgreSQL several worker processes each generate time-ordered chunks
of rows and stream them with binary COPY (asyncpg `copy_records_to_table`), so Python generation
and PostgreSQL's ingestion overlap on every core. `--drop-indexes` drops the secondary indexes
(everything but the primary key) first and rebuilds them afterwards from their own definitions,
read from the catalog: whatever the migrations created comes back exactly. On SQLite rows go
through the service's own `insert_events` in batches (small N only).

What the data looks like (all deterministic for a given --seed and --end):
- ~10,000 actors: ~9,600 users (Zipf-like activity: a handful do a large share; admins and
  auditors among the most active), a few service accounts, the `audit-service` system actor,
  and anonymous callers (failed logins under real, mistyped and attack user names).
- 45 actions over 11 modules: the service's own (`auth.login`, `prediction.created`,
  `activity.viewed`, ... with their real method, route path, status, latency) and ones ingested
  from `exam-platform` (multi-tenant: 50 tenants), `billing`, `document-store` and
  `reporting-api` (no request facts, recorded a little after they occurred).
- ~100,000 IPv4 addresses clustered in /16 blocks of real-looking ISP and office ranges, plus
  IPv6 for ~5% of users; every user has home addresses and a browser.
- Two years of timestamps ending at --end (default: now) with growth, weekday/weekend and
  working-hour rhythm (business time zone UTC-5), quiet holidays and a few busy days; rows are
  written in time order, as a live log would be.
- English descriptions with searchable words, common ("login", "report", "exam") to rare
  ("quarantine"), and a small JSON `metadata` object per action.

Prints one JSON line: rows, seconds, rows_per_s (plus load/index timings).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv6Address
from multiprocessing import get_context
from typing import Any

from audit_service.kit.net import ip_key, parse_ip

COLUMNS = (
    "event_id", "occurred_at", "recorded_at", "source", "tenant_id", "actor_type", "actor_id",
    "actor_name", "actor_role", "action", "module", "outcome", "description", "target_type",
    "target_id", "ip", "ip_bytes", "user_agent", "request_id", "method", "path", "status_code",
    "latency_ms", "metadata", "idempotency_key",
)  # fmt: skip

NATIVE = "audit-service"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds
HOUR_US = 3_600_000_000
BUSINESS_UTC_OFFSET_H = -5

# --- vocabulary ------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST = _words(
    "james mary john patricia robert jennifer michael linda william elizabeth david barbara "
    "richard susan joseph jessica thomas sarah charles karen daniel nancy matthew lisa anthony "
    "betty mark sandra paul ashley steven emily andrew kimberly joshua donna kevin michelle "
    "brian carol george amanda edward melissa ronald deborah timothy laura jason rebecca "
    "maria jose juan ana luis carmen carlos sofia diego lucia javier valentina miguel camila "
    "pablo isabel andres paula fernando daniela alejandro gabriela ricardo natalia"
)
LAST = _words(
    "smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez "
    "gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris "
    "sanchez clark ramirez lewis robinson walker young allen king wright scott torres nguyen "
    "hill flores green adams nelson baker hall rivera campbell mitchell carter roberts gomez "
    "diaz reyes morales ortiz gutierrez chavez ramos ruiz alvarez castillo jimenez moreno romero"
)
ATTACK_NAMES = (
    "admin", "root", "administrator", "test", "guest", "user", "admin1", "support", "oracle",
    "postgres", "ubuntu", "info", "sa", "operator", "demo", "webmaster", "backup", "ftp",
)  # fmt: skip
TENANT_WORDS_A = (
    "north", "south", "east", "west", "central", "river", "lake", "hill", "pacific", "atlantic",
)  # fmt: skip
TENANT_WORDS_B = ("college", "school", "academy", "institute", "university")

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 16_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.6422.113 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.179 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 12; moto g(60)) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/123.0.6312.99 Mobile Safari/537.36",
)
TOOL_AGENTS = (
    "python-httpx/0.27.0", "python-requests/2.32.3", "curl/8.5.0", "PostmanRuntime/7.39.0",
    "Go-http-client/1.1", "okhttp/4.12.0",
)  # fmt: skip

EXAMS = (
    "Algebra II midterm", "Organic chemistry quiz 3", "World history final", "Calculus I quiz 5",
    "Intro to programming lab exam", "Biology 101 midterm", "Statistics final", "Physics quiz 2",
    "English literature essay test", "Microeconomics midterm", "Spanish B1 placement test",
    "Data structures final", "Anatomy practical", "Accounting principles quiz 4",
)  # fmt: skip
COURSES = (
    "Biology 101", "Calculus I", "Intro to Psychology", "Organic Chemistry", "World History",
    "Python for Data Analysis", "Business English", "Financial Accounting", "Linear Algebra",
    "Public Speaking", "Nursing Fundamentals", "Digital Marketing", "Project Management",
)  # fmt: skip
DOCS = (
    "Q3 budget.xlsx", "contract_acme.pdf", "syllabus_2025.docx", "grades_export.csv",
    "meeting notes.txt", "invoice_scan.pdf", "thesis_draft_v7.docx", "lab_results.pdf",
    "enrollment_form.pdf", "timetable.xlsx", "photo_id.jpg", "policy_update.pdf",
)  # fmt: skip
MALWARE = ("Win.Trojan.Agent", "Doc.Macro.Obfuscated", "PDF.Exploit.CVE-2023-26369", "Eicar-Test")
REPORTS = (
    "monthly attendance", "weekly grades", "quarterly revenue", "enrollment summary",
    "failed payments", "course completion", "dropout risk", "instructor workload",
)  # fmt: skip
LABELS = ("setosa", "versicolor", "virginica")
PLANS = ("basic", "standard", "premium", "campus")
FILTER_KEYS = (
    '{"action": "auth.login"}', '{"actor": "%s"}', '{"module": "users"}',
    '{"outcome": "denied"}', '{"since": "2025-01-01T00:00:00Z"}', "{}", "{}",
    '{"q": "quarantine"}', '{"ip": "10.20.0.0/16"}', '{"action": "user.deleted"}',
)  # fmt: skip
SCHEMA_ACTIONS = ("exam.submitted", "invoice.created", "document.uploaded", "report.generated")
SERVER_ERRORS = (
    "TimeoutError", "ConnectionResetError", "OperationalError", "CancelledError", "MemoryError",
)  # fmt: skip

# --- actions ---------------------------------------------------------------------------------

# A row filler returns (description, target_type, target_id, metadata JSON) for one event.
Filler = Callable[[random.Random, Any, Any, float], tuple[Any, ...]]


def _hex(rnd: random.Random, digits: int) -> str:
    return f"{rnd.getrandbits(digits * 4):0{digits}x}"


def _uid(rnd: random.Random, frac: float) -> str:
    """A user id that existed at that point of the history (ids grow over time)."""
    return str(1000 + int(rnd.random() * (3000 + 6600 * frac)))


def _growing(rnd: random.Random, frac: float, scale: int) -> int:
    """An object id near the newest one at that point of the history (recent objects are hot)."""
    newest = 1 + int(scale * (0.02 + 0.98 * frac))
    return max(1, newest - int(-math.log(1.0 - rnd.random()) * scale * 0.002))


def f_login(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    return (
        f"User '{name}' logged in",
        "user",
        aid,
        f'{{"token_id": "{_hex(rnd, 32)}"}}',
    )


def f_login_failed(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    return f"Failed login for '{name}'", None, None, "{}"


def f_logout(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    return f"User '{name}' logged out", "user", aid, "{}"


def f_profile(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    return "Viewed own profile", "user", aid, "{}"


def f_user_created(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    new = rnd.choice(FIRST) + "." + rnd.choice(LAST)
    role = ("user", "user", "user", "auditor", "admin")[int(rnd.random() * 5)]
    return (
        f"Created user '{new}' ({role})",
        "user",
        _uid(rnd, frac),
        f'{{"username": "{new}", "role": "{role}"}}',
    )


def f_user_listed(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    page = 1 + int(-math.log(1.0 - rnd.random()) * 1.5)
    return f"Listed users (page {page})", None, None, f'{{"page": {page}, "page_size": 50}}'


def f_user_viewed(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    uid = _uid(rnd, frac)
    return f"Viewed user {uid}", "user", uid, "{}"


def f_user_updated(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    uid = _uid(rnd, frac)
    field = ("full_name", "email", "role", "password")[int(rnd.random() * 4)]
    return f"Updated {field} of user {uid}", "user", uid, f'{{"fields": ["{field}"]}}'


def f_user_deleted(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    uid = _uid(rnd, frac)
    return (
        f"Deleted user {uid} and revoked all of their sessions",
        "user",
        uid,
        '{"reason": "offboarding"}',
    )


def f_user_activated(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    uid = _uid(rnd, frac)
    return f"Activated user {uid}", "user", uid, '{"is_active": true}'


def f_user_deactivated(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    uid = _uid(rnd, frac)
    return f"Deactivated user {uid}", "user", uid, '{"is_active": false}'


def f_sessions_revoked(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    uid = _uid(rnd, frac)
    return f"Revoked all sessions of user {uid}", "user", uid, "{}"


def f_key_created(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    svc = ("exam-platform", "billing", "document-store", "reporting-api")[int(rnd.random() * 4)]
    key = str(_growing(rnd, frac, 400))
    return (
        f"Created API key for service '{svc}'",
        "api_key",
        key,
        f'{{"name": "{svc}", "prefix": "ak_{_hex(rnd, 8)}", "scopes": ["events:write"]}}',
    )


def f_key_listed(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    return "Listed API keys", None, None, '{"page": 1, "page_size": 20}'


def f_key_revoked(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    key = str(_growing(rnd, frac, 400))
    return f"Revoked API key {key}", "api_key", key, '{"reason": "rotation"}'


def f_predict(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    r = rnd.random()
    label = "setosa" if r < 0.34 else "versicolor" if r < 0.67 else "virginica"
    model = "iris-1.0.0" if frac < 0.4 else "iris-1.1.0" if frac < 0.8 else "iris-1.2.0"
    return (
        f"Predicted '{label}'",
        "model",
        model,
        f'{{"label": "{label}", "input_sha256": "{_hex(rnd, 64)}"}}',
    )


def f_activity_viewed(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    r = rnd.random()
    if r < 0.12:
        eid = f"{_hex(rnd, 8)}-{_hex(rnd, 4)}-4{_hex(rnd, 3)}-a{_hex(rnd, 3)}-{_hex(rnd, 12)}"
        return f"Viewed audit event {eid}", "audit_event", eid, "{}"
    filters = FILTER_KEYS[int(rnd.random() * len(FILTER_KEYS))]
    if "%s" in filters:
        filters = filters % name
    page = 1 + int(-math.log(1.0 - rnd.random()) * 0.8)
    nav = "page" if page < 4 else "cursor"
    return (
        "Viewed the activity log" if filters == "{}" else "Searched the activity log",
        None,
        None,
        f'{{"filters": {filters}, "page": {page}, "page_size": 50, "navigation": "{nav}"}}',
    )


def f_activity_exported(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    fmt = ("csv", "csv", "xlsx", "json", "ndjson")[int(rnd.random() * 5)]
    rows = int(math.exp(rnd.random() * 12))
    filters = FILTER_KEYS[int(rnd.random() * len(FILTER_KEYS))]
    if "%s" in filters:
        filters = filters % name
    return (
        f"Exported {rows} activity events as {fmt.upper()}",
        None,
        None,
        f'{{"format": "{fmt}", "rows": {rows}, "filters": {filters}}}',
    )


def f_event_posted(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    action = SCHEMA_ACTIONS[int(rnd.random() * len(SCHEMA_ACTIONS))]
    return f"Accepted 1 event from '{name}'", None, None, f'{{"action": "{action}"}}'


def f_batch_posted(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    n = 1 + int(rnd.random() * 500)
    return (
        f"Accepted a batch of {n} events from '{name}'",
        None,
        None,
        f'{{"accepted": {n}, "duplicates": {int(rnd.random() * 3)}}}',
    )


def f_action_listed(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    return "Listed action schemas", None, None, "{}"


def f_action_viewed(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    action = SCHEMA_ACTIONS[int(rnd.random() * len(SCHEMA_ACTIONS))]
    return f"Viewed the metadata schema of '{action}'", "action", action, "{}"


def f_config_changed(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    action = SCHEMA_ACTIONS[int(rnd.random() * len(SCHEMA_ACTIONS))]
    return (
        f"Changed the metadata schema of '{action}'",
        "action",
        action,
        '{"setting": "action_schema"}',
    )


def f_system_error(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    err = SERVER_ERRORS[int(rnd.random() * len(SERVER_ERRORS))]
    return f"Unhandled {err} while serving a request", None, None, f'{{"error": "{err}"}}'


def f_backup(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    size = 0.5 + 9.5 * frac + rnd.random()
    return (
        f"Nightly database backup completed ({size:.1f} GB)",
        "backup",
        _hex(rnd, 12),
        f'{{"size_gb": {size:.2f}, "duration_s": {int(60 + rnd.random() * 900)}}}',
    )


def f_maint_start(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    return "Maintenance window started: read-only mode", None, None, '{"mode": "read_only"}'


def f_maint_end(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    return "Maintenance window ended", None, None, '{"mode": "read_write"}'


def f_exam_started(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    exam = EXAMS[int(rnd.random() * len(EXAMS))]
    attempt = 1 if rnd.random() < 0.85 else 2
    return (
        f"Student started exam '{exam}' (attempt {attempt})",
        "exam",
        str(_growing(rnd, frac, 20_000)),
        f'{{"attempt": {attempt}}}',
    )


def f_exam_submitted(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    exam = EXAMS[int(rnd.random() * len(EXAMS))]
    total = 10 + 5 * int(rnd.random() * 5)
    answered = total - int(-math.log(1.0 - rnd.random()) * 1.2)
    return (
        f"Exam '{exam}' submitted with {max(answered, 0)} of {total} answers",
        "exam",
        str(_growing(rnd, frac, 20_000)),
        f'{{"answered": {max(answered, 0)}, "total": {total}}}',
    )


def f_exam_graded(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    score = int(35 + 65 * rnd.random() ** 0.6)
    exam = str(_growing(rnd, frac, 20_000))
    return (
        f"Graded exam {exam}: score {score}/100",
        "exam",
        exam,
        f'{{"score": {score}, "max_score": 100, "auto": true}}',
    )


def f_question_created(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    kind = ("multiple_choice", "true_false", "essay", "numeric")[int(rnd.random() * 4)]
    q = str(_growing(rnd, frac, 150_000))
    return f"Created {kind.replace('_', ' ')} question {q}", "question", q, f'{{"kind": "{kind}"}}'


def f_question_updated(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    q = str(_growing(rnd, frac, 150_000))
    return f"Edited question {q} (wording and answer key)", "question", q, '{"revision": 2}'


def f_enrolled(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    c = int(rnd.random() * len(COURSES))
    return (
        f"Enrolled in course '{COURSES[c]}'",
        "course",
        str(100 + c),
        f'{{"term": "{2024 + int(frac * 2)}-{1 + int(rnd.random() * 2)}"}}',
    )


def f_completed(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    c = int(rnd.random() * len(COURSES))
    grade = int(60 + 40 * rnd.random())
    return (
        f"Completed course '{COURSES[c]}' with final grade {grade}",
        "course",
        str(100 + c),
        f'{{"final_grade": {grade}, "certificate": true}}',
    )


def f_invoice_created(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    inv = f"INV-{_growing(rnd, frac, 900_000):07d}"
    plan = PLANS[int(rnd.random() * 4)]
    amount = (49, 99, 149, 990)[PLANS.index(plan)]
    return (
        f"Invoice {inv} created for the {plan} plan: {amount}.00 USD",
        "invoice",
        inv,
        f'{{"amount": {amount}.0, "currency": "USD", "plan": "{plan}"}}',
    )


def f_invoice_paid(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    inv = f"INV-{_growing(rnd, frac, 900_000):07d}"
    method = ("card", "card", "card", "transfer", "paypal")[int(rnd.random() * 5)]
    return f"Invoice {inv} paid by {method}", "invoice", inv, f'{{"method": "{method}"}}'


def f_payment_failed(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    inv = f"INV-{_growing(rnd, frac, 900_000):07d}"
    why = ("card declined", "insufficient funds", "expired card", "fraud check")[
        int(rnd.random() * 4)
    ]
    return f"Payment failed for invoice {inv}: {why}", "invoice", inv, f'{{"reason": "{why}"}}'


def f_sub_cancelled(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    sub = f"SUB-{_growing(rnd, frac, 60_000):06d}"
    return (
        f"Subscription {sub} cancelled at the end of the billing period",
        "subscription",
        sub,
        '{"refund": false}',
    )


def f_doc_uploaded(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    doc = DOCS[int(rnd.random() * len(DOCS))]
    mb = math.exp(rnd.random() * 4 - 2)
    d = str(_growing(rnd, frac, 2_000_000))
    return (
        f"Document '{doc}' uploaded ({mb:.1f} MB)",
        "document",
        d,
        f'{{"filename": "{doc}", "bytes": {int(mb * 1048576)}}}',
    )


def f_doc_downloaded(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    doc = DOCS[int(rnd.random() * len(DOCS))]
    return (
        f"Document '{doc}' downloaded",
        "document",
        str(_growing(rnd, frac, 2_000_000)),
        f'{{"filename": "{doc}"}}',
    )


def f_doc_shared(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    doc = DOCS[int(rnd.random() * len(DOCS))]
    n = 1 + int(rnd.random() * 6)
    return (
        f"Document '{doc}' shared with {n} people",
        "document",
        str(_growing(rnd, frac, 2_000_000)),
        f'{{"recipients": {n}, "link_expires_days": 7}}',
    )


def f_doc_scanned(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    doc = DOCS[int(rnd.random() * len(DOCS))]
    return (
        f"Antivirus scan of '{doc}': clean",
        "document",
        str(_growing(rnd, frac, 2_000_000)),
        '{"engine": "clamav", "result": "clean"}',
    )


def f_doc_quarantined(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    doc = DOCS[int(rnd.random() * len(DOCS))]
    sig = MALWARE[int(rnd.random() * len(MALWARE))]
    return (
        f"Document '{doc}' moved to quarantine: malware signature {sig} detected",
        "document",
        str(_growing(rnd, frac, 2_000_000)),
        f'{{"engine": "clamav", "signature": "{sig}"}}',
    )


def f_report_generated(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    rep = REPORTS[int(rnd.random() * len(REPORTS))]
    fmt = ("pdf", "xlsx", "csv")[int(rnd.random() * 3)]
    return (
        f"Generated the {rep} report ({fmt.upper()})",
        "report",
        str(_growing(rnd, frac, 400_000)),
        f'{{"format": "{fmt}", "pages": {1 + int(rnd.random() * 40)}}}',
    )


def f_report_scheduled(rnd: random.Random, name: str, aid: str, frac: float) -> tuple[Any, ...]:
    rep = REPORTS[int(rnd.random() * len(REPORTS))]
    cron = ("daily", "weekly", "monthly")[int(rnd.random() * 3)]
    return (
        f"Scheduled the {rep} report to run {cron}",
        "report_schedule",
        str(_growing(rnd, frac, 5_000)),
        f'{{"frequency": "{cron}"}}',
    )


# Profiles: who does what. `user`, `admin`, `auditor` are people; `anon` failed logins;
# `anon_x` unauthenticated requests; the rest are machine actors.
PROFILES = (
    "user", "admin", "auditor", "anon", "anon_x", "system",
    "svc_exam", "svc_billing", "svc_docs", "svc_reports", "svc_ingest",
)  # fmt: skip


class Action:
    """One action: where it comes from, how it is served, how it fails and who does it."""

    __slots__ = (
        "failure",
        "fill",
        "latency",
        "method",
        "module",
        "name",
        "native",
        "ok_status",
        "outcome",
        "path",
        "source",
        "staff_only",
        "tenanted",
        "weights",
    )

    def __init__(
        self,
        name: str,
        module: str,
        source: str,
        fill: Filler,
        weights: dict[str, float],
        *,
        route: str | None = None,
        ok: int = 200,
        fail: tuple[float, float, float] = (0.004, 0.004, 0.0008),
        failure: int = 422,
        latency: float = 25.0,
        outcome: str | None = None,
    ) -> None:
        self.name, self.module, self.source, self.fill = name, module, source, fill
        self.weights = weights
        self.native = source == NATIVE and route is not None
        self.method, _, self.path = route.partition(" ") if route else (None, None, None)
        self.ok_status, self.failure, self.latency = ok, failure, latency
        self.tenanted = source == "exam-platform"
        # The service's admin pages: a regular user gets a 403 there.
        self.staff_only = self.native and self.path.startswith("/admin/")
        # Cumulative thresholds for failure / denied / error; the rest is success.
        f, d, e = fail
        self.outcome = (outcome, f, f + d, f + d + e)


ACTIONS = (
    # -- the service's own (source audit-service, request facts filled) --
    Action("auth.login", "auth", NATIVE, f_login,
           {"user": 14, "admin": 10, "auditor": 10}, route="POST /login",
           latency=180.0, fail=(0, 0.001, 0.0005)),
    Action("auth.login_failed", "auth", NATIVE, f_login_failed, {"anon": 100},
           route="POST /login", ok=401, latency=190.0, outcome="failure"),
    Action("auth.logout", "auth", NATIVE, f_logout,
           {"user": 5, "admin": 4, "auditor": 4}, route="POST /logout", ok=204, latency=8.0),
    Action("auth.profile_viewed", "auth", NATIVE, f_profile,
           {"user": 4, "admin": 2, "auditor": 1, "anon_x": 30}, route="GET /me", latency=6.0),
    Action("user.created", "users", NATIVE, f_user_created, {"admin": 1.6},
           route="POST /admin/users", ok=201, latency=210.0, fail=(0.03, 0.002, 0.001),
           failure=409),
    Action("user.listed", "users", NATIVE, f_user_listed,
           {"admin": 4, "auditor": 1, "user": 0.02}, route="GET /admin/users", latency=15.0),
    Action("user.viewed", "users", NATIVE, f_user_viewed,
           {"admin": 5, "auditor": 2, "user": 0.03}, route="GET /admin/users/{user_id}",
           latency=7.0, fail=(0.01, 0.002, 0.0005), failure=404),
    Action("user.updated", "users", NATIVE, f_user_updated, {"admin": 2},
           route="PATCH /admin/users/{user_id}", latency=30.0, fail=(0.02, 0.002, 0.001)),
    Action("user.deleted", "users", NATIVE, f_user_deleted, {"admin": 0.05},
           route="DELETE /admin/users/{user_id}", ok=204, latency=40.0),
    Action("user.activated", "users", NATIVE, f_user_activated, {"admin": 0.3},
           route="PATCH /admin/users/{user_id}", latency=30.0),
    Action("user.deactivated", "users", NATIVE, f_user_deactivated, {"admin": 0.35},
           route="PATCH /admin/users/{user_id}", latency=30.0),
    Action("user.sessions_revoked", "users", NATIVE, f_sessions_revoked, {"admin": 0.25},
           route="POST /admin/users/{user_id}/revoke-sessions", ok=204, latency=20.0),
    Action("api_key.created", "auth", NATIVE, f_key_created, {"admin": 0.2},
           route="POST /admin/api-keys", ok=201, latency=25.0),
    Action("api_key.listed", "auth", NATIVE, f_key_listed, {"admin": 0.8},
           route="GET /admin/api-keys", latency=9.0),
    Action("api_key.revoked", "auth", NATIVE, f_key_revoked, {"admin": 0.08},
           route="DELETE /admin/api-keys/{key_id}", ok=204, latency=12.0),
    Action("prediction.created", "prediction", NATIVE, f_predict,
           {"user": 20, "admin": 2, "anon_x": 25}, route="POST /predict", latency=4.0,
           fail=(0.015, 0.002, 0.001)),
    Action("activity.viewed", "activity", NATIVE, f_activity_viewed,
           {"admin": 30, "auditor": 55, "user": 0.4, "anon_x": 30},
           route="GET /admin/activity", latency=35.0, fail=(0.01, 0.002, 0.002)),
    Action("activity.exported", "activity", NATIVE, f_activity_exported,
           {"admin": 1.2, "auditor": 3}, route="GET /admin/activity/export",
           latency=900.0, fail=(0.01, 0.002, 0.005)),
    Action("ingestion.event_posted", "ingestion", NATIVE, f_event_posted,
           {"svc_ingest": 20, "svc_docs": 4}, route="POST /events", ok=201, latency=12.0,
           fail=(0.03, 0.003, 0.001)),
    Action("ingestion.batch_posted", "ingestion", NATIVE, f_batch_posted,
           {"svc_ingest": 20, "svc_exam": 6, "svc_billing": 4, "svc_reports": 3},
           route="POST /events/batch", ok=201, latency=120.0, fail=(0.01, 0.003, 0.002)),
    Action("action.listed", "ingestion", NATIVE, f_action_listed, {"admin": 0.6},
           route="GET /admin/actions", latency=6.0),
    Action("action.viewed", "ingestion", NATIVE, f_action_viewed, {"admin": 0.6},
           route="GET /admin/actions/{action}/schema", latency=6.0),
    Action("config.changed", "ingestion", NATIVE, f_config_changed, {"admin": 0.25},
           route="PUT /admin/actions/{action}/schema", latency=20.0, fail=(0.05, 0.002, 0.001)),
    Action("system.error", "system", NATIVE, f_system_error, {"system": 25, "user": 0.03},
           route="POST /predict", ok=500, latency=3000.0, outcome="error"),
    Action("system.backup", "system", NATIVE, f_backup, {"system": 10}, fail=(0, 0, 0.01)),
    Action("system.maintenance_started", "system", NATIVE, f_maint_start, {"system": 1}),
    Action("system.maintenance_ended", "system", NATIVE, f_maint_end, {"system": 1}),
    # -- ingested from other services (no request facts) --
    Action("exam.started", "exams", "exam-platform", f_exam_started, {"user": 2.4}),
    Action("exam.submitted", "exams", "exam-platform", f_exam_submitted, {"user": 2.1}),
    Action("exam.graded", "exams", "exam-platform", f_exam_graded, {"svc_exam": 50}),
    Action("question.created", "exams", "exam-platform", f_question_created,
           {"admin": 2, "svc_exam": 1}),
    Action("question.updated", "exams", "exam-platform", f_question_updated, {"admin": 1.5}),
    Action("course.enrolled", "courses", "exam-platform", f_enrolled, {"user": 0.6}),
    Action("course.completed", "courses", "exam-platform", f_completed, {"user": 0.25}),
    Action("invoice.created", "billing", "billing", f_invoice_created, {"svc_billing": 30}),
    Action("invoice.paid", "billing", "billing", f_invoice_paid, {"user": 0.4}),
    Action("payment.failed", "billing", "billing", f_payment_failed, {"user": 0.05},
           outcome="failure"),
    Action("subscription.cancelled", "billing", "billing", f_sub_cancelled,
           {"user": 0.03, "svc_billing": 0.5}),
    Action("document.uploaded", "documents", "document-store", f_doc_uploaded, {"user": 2}),
    Action("document.downloaded", "documents", "document-store", f_doc_downloaded,
           {"user": 3.5, "auditor": 1}, fail=(0.002, 0.01, 0.0005)),
    Action("document.shared", "documents", "document-store", f_doc_shared, {"user": 0.6}),
    Action("document.scanned", "documents", "document-store", f_doc_scanned, {"svc_docs": 40}),
    Action("document.quarantined", "documents", "document-store", f_doc_quarantined,
           {"svc_docs": 0.08}),
    Action("report.generated", "reports", "reporting-api", f_report_generated,
           {"user": 1, "admin": 3, "auditor": 4, "svc_reports": 30}, fail=(0.01, 0.002, 0.004)),
    Action("report.scheduled", "reports", "reporting-api", f_report_scheduled,
           {"admin": 0.5, "svc_reports": 1}),
)  # fmt: skip


def _tables() -> dict[str, tuple[list[float], list[Action]]]:
    tables = {}
    for profile in PROFILES:
        acts = [a for a in ACTIONS if profile in a.weights]
        cum, total = [], 0.0
        for a in acts:
            total += a.weights[profile]
            cum.append(total)
        tables[profile] = ([c / total for c in cum], acts)
    return tables


# --- the world: actors, addresses, tenants ---------------------------------------------------


class World:
    """Everything a worker needs besides the clock; built once from the seed (then forked)."""

    def __init__(self, seed: int, actors: int = 10_000, addresses: int = 100_000) -> None:
        rnd = random.Random(f"{seed}:world")
        self.ip_pool = _ip_pool(rnd, addresses)
        self.ip_pool_cum = _zipf_cum(len(self.ip_pool), 0.6, 5.0)
        self.tenants = [
            f"{a}-{b}-{i:02d}"
            for i, (a, b) in enumerate(
                (rnd.choice(TENANT_WORDS_A), rnd.choice(TENANT_WORDS_B)) for _ in range(50)
            )
        ]
        self.tenant_cum = tenant_cum = _zipf_cum(len(self.tenants), 1.0, 2.0)
        tables = _tables()
        # Actor tuple: type, id, name, role, (cum, actions), home addresses, user agent, tenant.
        people: list[tuple[Any, ...]] = []
        names: set[str] = set()
        n_users = actors - 400
        for i in range(n_users):
            name = _username(rnd, names)
            v6 = rnd.random() < 0.08
            homes = tuple(
                self._home_address(rnd, v6 and j == 0) for j in range(1 + int(rnd.random() * 3))
            )
            ua = USER_AGENTS[min(int(rnd.expovariate(0.35)), len(USER_AGENTS) - 1)]
            tenant = self.tenants[bisect.bisect(tenant_cum, rnd.random())]
            people.append(["user", str(1000 + i), name, "user", None, homes, ua, tenant])
        # Zipf-like activity over a random ranking of the people; the most active are staff
        # more often than chance (auditors and admins live in the activity log).
        order = list(range(n_users))
        rnd.shuffle(order)
        user_w = [0.0] * n_users
        for rank, idx in enumerate(order):
            user_w[idx] = 1.0 / (rank + 4) ** 0.95
            r = rnd.random()
            staff_odds = 0.35 if rank < 30 else 0.03
            if r < staff_odds / 3:
                people[idx][3] = "admin"
            elif r < staff_odds:
                people[idx][3] = "auditor"
        for p in people:
            p[4] = tables[p[3]]
        actors_w: list[tuple[tuple[Any, ...], float]] = []
        user_total = sum(user_w)
        for p, w in zip(people, user_w, strict=True):
            actors_w.append((tuple(p), 0.78 * w / user_total))
        # Failed logins: mostly real users mistyping (from home), some attack names from a
        # handful of hostile addresses, and junk.
        attackers = [self._pool_ip(rnd) for _ in range(12)]
        anon = []
        for _ in range(380):
            r = rnd.random()
            if r < 0.6:
                p = people[int(rnd.random() * n_users)]
                anon.append((p[2], p[5][0], p[6], 1.0))
            elif r < 0.8:
                who = rnd.choice(ATTACK_NAMES)
                anon.append((who, rnd.choice(attackers), rnd.choice(TOOL_AGENTS), 3.0))
            else:
                who = rnd.choice(FIRST) + rnd.choice(("", "1", "_", ".")) + rnd.choice(LAST)
                anon.append((who, self._pool_ip(rnd), rnd.choice(USER_AGENTS), 0.5))
        anon_total = sum(a[3] for a in anon)
        for name, ip, ua, w in anon:
            actor = ("anonymous", None, name, None, tables["anon"], (ip,), ua, None)
            actors_w.append((actor, 0.022 * w / anon_total))
        # Unauthenticated requests (expired tokens, scanners): no name at all.
        for _ in range(20):
            actor = (
                "anonymous",
                None,
                None,
                None,
                tables["anon_x"],
                (self._pool_ip(rnd),),
                rnd.choice(USER_AGENTS + TOOL_AGENTS),
                None,
            )
            actors_w.append((actor, 0.012 / 20))
        actors_w.append(
            (
                (
                    "system",
                    "audit-service",
                    "audit-service",
                    None,
                    tables["system"],
                    (),
                    None,
                    None,
                ),
                0.006,
            )
        )
        services = (
            ("exam-grader", "svc_exam", 0.035),
            ("exam-platform", "svc_exam", 0.01),
            ("billing-sync", "svc_billing", 0.02),
            ("av-scanner", "svc_docs", 0.045),
            ("report-scheduler", "svc_reports", 0.02),
            ("lms-connector", "svc_ingest", 0.012),
            ("hr-sync", "svc_ingest", 0.006),
            ("crm-bridge", "svc_ingest", 0.004),
        )
        for k, (name, profile, share) in enumerate(services):
            ip = (f"10.20.{4 + k}.{10 + k}", ip_key(parse_ip(f"10.20.{4 + k}.{10 + k}")))
            agent = TOOL_AGENTS[k % 2] + f" {name}/{1 + k % 3}.{k}"
            actor = (
                "service",
                str(900_001 + k),
                name,
                "service",
                tables[profile],
                (ip,),
                agent,
                None,
            )
            actors_w.append((actor, share))
        total = sum(w for _, w in actors_w)
        self.actors = [a for a, _ in actors_w]
        self.actor_cum, acc = [], 0.0
        for _, w in actors_w:
            acc += w / total
            self.actor_cum.append(acc)
        self.actor_cum[-1] = 1.0
        self.user_names = [p[2] for p in people]

    def _pool_ip(self, rnd: random.Random) -> tuple[str, bytes]:
        return self.ip_pool[bisect.bisect(self.ip_pool_cum, rnd.random())]

    def _home_address(self, rnd: random.Random, v6: bool) -> tuple[str, bytes]:
        if v6:
            return _v6_address(rnd)
        return self._pool_ip(rnd)


def _zipf_cum(n: int, s: float, offset: float) -> list[float]:
    weights = [1.0 / (i + offset) ** s for i in range(n)]
    total, acc, cum = sum(weights), 0.0, []
    for w in weights:
        acc += w / total
        cum.append(acc)
    cum[-1] = 1.0
    return cum


def _username(rnd: random.Random, taken: set[str]) -> str:
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    r = rnd.random()
    name = f"{first}.{last}" if r < 0.5 else f"{first[0]}{last}" if r < 0.8 else f"{first}{last[0]}"
    base, n = name, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    taken.add(name)
    return name


# Real-looking address space: residential/mobile ISP blocks (Americas and Europe), cloud
# ranges, and an office network in 10.0.0.0/8. Addresses cluster in a few /24s per /16.
_V4_FIRST_OCTETS = (
    24, 31, 37, 46, 62, 66, 67, 68, 71, 73, 76, 77, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89,
    90, 91, 92, 93, 94, 95, 98, 99, 104, 108, 152, 170, 177, 179, 181, 186, 187, 189, 190, 191,
    200, 201,
)  # fmt: skip
_V6_PREFIXES = tuple(
    int(IPv6Address(p + "::"))
    for p in ("2800:810", "2803:9800", "2a02:908", "2a01:cb00", "2600:1700", "2601:647",
              "2001:818", "2a00:23c5")
)  # fmt: skip


def _ip_pool(rnd: random.Random, n: int) -> list[tuple[str, bytes]]:
    blocks: list[tuple[int, int]] = []
    seen_blocks: set[tuple[int, int]] = set()
    while len(blocks) < 420:
        block = (rnd.choice(_V4_FIRST_OCTETS), int(rnd.random() * 256))
        if block not in seen_blocks:
            seen_blocks.add(block)
            blocks.append(block)
    blocks[:20] = [(10, 20 + i) for i in range(20)]  # the office / VPN network
    block_cum = _zipf_cum(len(blocks), 1.0, 8.0)
    subnets: dict[tuple[int, int], list[int]] = {}
    seen: set[tuple[int, int, int, int]] = set()
    pool: list[tuple[str, bytes]] = []
    while len(pool) < n:
        a, b = blocks[bisect.bisect(block_cum, rnd.random())]
        thirds = subnets.setdefault((a, b), [int(rnd.random() * 256) for _ in range(3)])
        if rnd.random() < 0.02 and len(thirds) < 256:
            thirds.append(int(rnd.random() * 256))
        address = (a, b, rnd.choice(thirds), 1 + int(rnd.random() * 254))
        if address in seen:
            continue
        seen.add(address)
        text = ".".join(map(str, address))
        pool.append((text, ip_key(IPv4Address(text))))
    rnd.shuffle(pool)  # rank (popularity) independent of the block
    return pool


def _v6_address(rnd: random.Random) -> tuple[str, bytes]:
    # An ISP /32, a customer's delegated /56 in it, a privacy (random) interface id.
    address = IPv6Address(
        rnd.choice(_V6_PREFIXES) | rnd.getrandbits(24) << 72 | rnd.getrandbits(64)
    )
    return str(address), ip_key(address)


# --- the clock ---------------------------------------------------------------------------------

_HOUR_SHAPE = (
    0.06, 0.04, 0.035, 0.035, 0.04, 0.07, 0.18, 0.42, 0.78, 1.0, 1.0, 0.95, 0.72, 0.7, 0.92,
    0.95, 0.88, 0.68, 0.45, 0.32, 0.26, 0.2, 0.14, 0.09,
)  # fmt: skip
_WEEKDAY = (1.0, 1.06, 1.05, 1.0, 0.85, 0.28, 0.2)  # Monday first


def hour_plan(n: int, end_us: int, days: int, seed: int) -> tuple[int, list[int]]:
    """Split n events over the hours of `days` days ending at end_us (Unix µs).

    Returns the first hour's start and the cumulative event count at the end of each hour.
    """
    end_hour = end_us // HOUR_US
    first = end_hour - days * 24
    rnd = random.Random(f"{seed}:days")
    day_factor: dict[int, float] = {}
    weights = []
    hours = end_hour - first + 1
    for i in range(hours):
        start = (first + i) * HOUR_US
        local = datetime.fromtimestamp(start / 1e6, UTC) + timedelta(hours=BUSINESS_UTC_OFFSET_H)
        day = local.toordinal()
        if day not in day_factor:
            f = 0.85 + 0.3 * rnd.random()
            if rnd.random() < 0.015:
                f *= 2.2  # exam season / incident: a very busy day
            if (local.month == 12 and local.day >= 24) or (local.month == 1 and local.day <= 1):
                f *= 0.3
            day_factor[day] = f
        growth = 0.55 + 0.45 * i / hours
        w = growth * day_factor[day] * _WEEKDAY[local.weekday()] * _HOUR_SHAPE[local.hour]
        if i == hours - 1:
            w *= (end_us - start) / HOUR_US  # the current, partial hour
        weights.append(w)
    total, acc, cum = sum(weights), 0.0, []
    for w in weights:
        acc += w
        cum.append(round(n * acc / total))
    cum[-1] = n
    return first * HOUR_US, cum


def _hour_times(seed: int, hour: int, start_us: int, count: int, limit_us: int) -> list[int]:
    rnd = random.Random(seed * 1_000_003 + hour)
    span = min(HOUR_US, limit_us - start_us)
    return sorted(start_us + int(rnd.random() * span) for _ in range(count))


# --- rows --------------------------------------------------------------------------------------


def chunk_times(plan: tuple[int, list[int]], seed: int, lo: int, hi: int, end_us: int) -> list[int]:
    """Sorted timestamps (Unix µs) of events lo..hi-1 of the whole history."""
    first_us, cum = plan
    h = bisect.bisect_right(cum, lo)
    out: list[int] = []
    while len(out) < hi - lo:
        before = cum[h - 1] if h else 0
        count = cum[h] - before
        if count:
            times = _hour_times(seed, h, first_us + h * HOUR_US, count, end_us)
            out.extend(times[max(lo - before, 0) : hi - before])
        h += 1
    return out


def generate_chunk(
    world: World, plan: tuple[int, list[int]], seed: int, lo: int, hi: int, end_us: int
) -> list[tuple[Any, ...]]:
    """Rows (in COPY column order) for events lo..hi-1; timestamps as (PG µs,) tuples."""
    rnd = random.Random(f"{seed}:{lo}")
    random_, getrandbits, bisect_ = rnd.random, rnd.getrandbits, bisect.bisect
    actors, actor_cum = world.actors, world.actor_cum
    pool, pool_cum = world.ip_pool, world.ip_pool_cum
    tenants, tenant_cum = world.tenants, world.tenant_cum
    first_us = plan[0]
    span = end_us - first_us
    log = math.log
    uuid_mask = ~(0xF << 76 | 0x3 << 62) & (1 << 128) - 1
    uuid_bits = 0x4 << 76 | 0x2 << 62
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    for t in chunk_times(plan, seed, lo, hi, end_us):
        atype, aid, aname, arole, (cum, acts), homes, ua, tenant = actors[
            bisect_(actor_cum, random_())
        ]
        act = acts[bisect_(cum, random_())]
        frac = (t - first_us) / span
        description, target_type, target_id, metadata = act.fill(rnd, aname, aid, frac)
        forced, p_fail, p_denied, p_error = act.outcome
        r = random_()
        if forced is not None:
            outcome = forced
        elif r >= p_error:
            outcome = "success"
        elif r < p_fail:
            outcome = "failure"
        elif r < p_denied:
            outcome = "denied"
        else:
            outcome = "error"
        if aname is None and atype == "anonymous":  # no or expired token
            outcome, description, target_type, target_id = "denied", None, None, None
            metadata = '{"auth_error": "invalid_token"}'
        elif arole == "user" and act.staff_only:
            outcome = "denied"  # a regular user knocking on an admin page
        if homes:
            if atype != "user" or random_() < 0.85:
                address = homes[0] if len(homes) == 1 or random_() < 0.7 else homes[-1]
            else:
                address = pool[bisect_(pool_cum, random_())]  # travelling, mobile data
            ip, ip_bytes = address
        else:
            ip = ip_bytes = None
        pg_t = t - PG_EPOCH_US
        # A multi-tenant caller; its service accounts work for every tenant.
        tenant_id = (tenant or tenants[bisect_(tenant_cum, random_())]) if act.tenanted else None
        if act.native:
            if outcome == "success":
                status = act.ok_status
            elif outcome == "denied":
                status = 401 if atype == "anonymous" else 403
            elif outcome == "error":
                status = 500
            else:
                status = act.failure if act.ok_status < 400 else act.ok_status
            latency_us = int(act.latency * (300.0 - 1000.0 * log(1.0 - random_())))
            latency = latency_us / 1000
            recorded = pg_t + latency_us + 300
            request_id = f"{getrandbits(128):032x}"
            method, path, agent = act.method, act.path, ua
            key = None
        else:
            status = latency = request_id = method = path = None
            agent = ua if atype == "user" or act.source == NATIVE else None
            recorded = pg_t + 150_000 + int(-log(1.0 - random_()) * 4_000_000)
            key = None
        h = f"{(getrandbits(128) & uuid_mask) | uuid_bits:032x}"
        if not act.native and act.source != NATIVE and random_() < 0.35:
            key = f"{act.source}:{h[:24]}"
        append(
            (
                h,
                (pg_t,),
                (recorded,),
                act.source,
                tenant_id,
                atype,
                aid,
                aname,
                arole,
                act.name,
                act.module,
                outcome,
                description,
                target_type,
                target_id,
                ip,
                ip_bytes,
                agent,
                request_id,
                method,
                path,
                status,
                latency,
                metadata,
                key,
            )
        )
    return rows


# --- PostgreSQL ------------------------------------------------------------------------------


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _connect(url: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url))
    # Timestamps travel as (microseconds since 2000-01-01,): no datetime objects to build.
    await conn.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=tuple, decoder=tuple, format="tuple"
    )
    await conn.execute("SET synchronous_commit = off")
    return conn


# Set in the parent before the workers fork: they inherit it instead of rebuilding it.
_WORLD: World | None = None


def _server_cpu(pid: int) -> float | None:
    """CPU seconds used by a backend, when the server runs on this machine (else None)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _pg_worker(url: str, args: dict[str, Any], chunks: list[tuple[int, int]]) -> dict[str, Any]:
    # Millions of short-lived tuples and no reference cycles: the cyclic GC only costs time.
    gc.freeze()
    gc.disable()

    async def run() -> dict[str, Any]:
        assert _WORLD is not None
        conn = await _connect(url)
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        server0 = _server_cpu(pid)
        plan = args["plan"]
        generate = 0.0
        try:
            for lo, hi in chunks:
                t0 = time.process_time()
                rows = generate_chunk(_WORLD, plan, args["seed"], lo, hi, args["end_us"])
                generate += time.process_time() - t0
                await conn.copy_records_to_table("audit_event", records=rows, columns=COLUMNS)
            server1 = _server_cpu(pid)
        finally:
            await conn.close()
        return {
            "generate": generate,
            "client": time.process_time(),
            "server": None if server0 is None or server1 is None else server1 - server0,
        }

    return asyncio.run(run())


_INDEX_QUERY = """
SELECT i.indexname, i.indexdef, c.conname, pg_get_constraintdef(c.oid) AS condef,
       pg_relation_size(format('%I.%I', i.schemaname, i.indexname)::regclass) AS bytes
FROM pg_indexes i
JOIN pg_class ic ON ic.relname = i.indexname
JOIN pg_namespace n ON n.oid = ic.relnamespace AND n.nspname = i.schemaname
JOIN pg_index x ON x.indexrelid = ic.oid
LEFT JOIN pg_constraint c ON c.conindid = ic.oid AND c.conrelid = x.indrelid
WHERE i.schemaname = current_schema() AND i.tablename = 'audit_event' AND NOT x.indisprimary
ORDER BY i.indexname
"""


async def _drop_indexes(url: str) -> list[dict[str, Any]]:
    conn = await _connect(url)
    try:
        found = [dict(r) for r in await conn.fetch(_INDEX_QUERY)]
        print(json.dumps({"dropping": found}, default=str), file=sys.stderr)
        async with conn.transaction():
            for ix in found:
                if ix["conname"]:
                    await conn.execute(f'ALTER TABLE audit_event DROP CONSTRAINT "{ix["conname"]}"')
                else:
                    await conn.execute(f'DROP INDEX "{ix["indexname"]}"')
        return found
    finally:
        await conn.close()


def _ddl(ix: dict[str, Any]) -> str:
    if ix["conname"]:
        return f'ALTER TABLE audit_event ADD CONSTRAINT "{ix["conname"]}" {ix["condef"]}'
    return str(ix["indexdef"])


async def _create_indexes(url: str, found: list[dict[str, Any]], jobs: int) -> dict[str, float]:
    # GIN (trigram) builds are the slowest and cannot use parallel workers: start them first.
    queue = sorted(found, key=lambda ix: (" gin " not in ix["indexdef"].lower(), ix["indexname"]))
    timings: dict[str, float] = {}

    async def builder() -> None:
        conn = await _connect(url)
        try:
            await conn.execute("SET maintenance_work_mem = '1GB'")
            while queue:
                ix = queue.pop(0)
                t0 = time.perf_counter()
                await conn.execute(_ddl(ix))
                timings[ix["indexname"]] = round(time.perf_counter() - t0, 2)
                print(
                    json.dumps({"index": ix["indexname"], "seconds": timings[ix["indexname"]]}),
                    file=sys.stderr,
                )
        finally:
            await conn.close()

    await asyncio.gather(*(builder() for _ in range(max(1, jobs))))
    return timings


def load_postgres(url: str, args: argparse.Namespace, world: World) -> dict[str, Any]:
    global _WORLD
    _WORLD = world
    end_us = args.end_us
    plan = hour_plan(args.events, end_us, args.days, args.seed)
    bounds = [(lo, min(lo + args.batch, args.events)) for lo in range(0, args.events, args.batch)]
    workers = max(1, min(args.workers, len(bounds)))
    # Each worker takes every workers-th chunk: all of them advance through time together,
    # so the table fills in (roughly) time order.
    shares = [bounds[w::workers] for w in range(workers)]
    found: list[dict[str, Any]] = []
    if args.drop_indexes:
        found = asyncio.run(_drop_indexes(url))
    shared = {"plan": plan, "seed": args.seed, "end_us": end_us}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        results = list(pool.map(_pg_worker, [url] * workers, [shared] * workers, shares))
    load = time.perf_counter() - t0
    report: dict[str, Any] = {
        "load_seconds": round(load, 2),
        "load_rows_per_s": round(args.events / load) if load else None,
        "workers": workers,
        # Where the CPU went (all processes): generating rows, the rest of the client
        # (binary COPY encoding), and the PostgreSQL backends (when the server is local).
        "cpu_seconds": {
            "generate": round(sum(r["generate"] for r in results), 2),
            "client_total": round(sum(r["client"] for r in results), 2),
            "server": None
            if any(r["server"] is None for r in results)
            else round(sum(r["server"] for r in results), 2),
        },
    }
    if found:
        t1 = time.perf_counter()
        report["index_seconds_each"] = asyncio.run(_create_indexes(url, found, args.index_jobs))
        report["index_seconds"] = round(time.perf_counter() - t1, 2)
    return report


# --- SQLite (and any other dialect): the service's own insert path -----------------------------


def load_generic(url: str, args: argparse.Namespace, world: World) -> dict[str, Any]:
    import uuid

    from sqlalchemy.ext.asyncio import create_async_engine

    from audit_service.audit_log.repository import insert_events

    plan = hour_plan(args.events, args.end_us, args.days, args.seed)

    def as_dicts(rows: Sequence[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
        for row in rows:
            d = dict(zip(COLUMNS, row, strict=True))
            d["event_id"] = uuid.UUID(d["event_id"])
            us = d["occurred_at"][0] + PG_EPOCH_US
            d["occurred_at"] = datetime.fromtimestamp(us / 1e6, UTC)
            del d["recorded_at"]  # insert_events stamps it
            d["metadata"] = json.loads(d["metadata"])
            yield d

    async def run() -> None:
        engine = create_async_engine(url)
        try:
            for lo in range(0, args.events, args.batch):
                hi = min(lo + args.batch, args.events)
                rows = generate_chunk(world, plan, args.seed, lo, hi, args.end_us)
                async with engine.begin() as conn:
                    await insert_events(conn, list(as_dicts(rows)))
        finally:
            await engine.dispose()

    t0 = time.perf_counter()
    asyncio.run(run())
    load = time.perf_counter() - t0
    return {"load_seconds": round(load, 2), "workers": 1}


# --- CLI ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch", type=int, default=20_000, help="rows per COPY / INSERT")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 2,
        help="generating + COPYing processes (PostgreSQL)",
    )
    parser.add_argument("--days", type=int, default=730, help="history length")
    parser.add_argument("--end", help="ISO time the history ends at (default: now)")
    parser.add_argument(
        "--drop-indexes",
        action="store_true",
        help="drop secondary indexes before loading and rebuild them after",
    )
    parser.add_argument(
        "--index-jobs", type=int, default=2, help="indexes built at once after --drop-indexes"
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url or DATABASE_URL is required")
    end = datetime.fromisoformat(args.end) if args.end else datetime.now(UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    args.end_us = int(end.timestamp() * 1_000_000)
    t0 = time.perf_counter()
    world = World(args.seed)
    setup = time.perf_counter() - t0
    postgres = args.database_url.startswith(("postgresql", "postgres"))
    if args.drop_indexes and not postgres:
        parser.error("--drop-indexes is PostgreSQL only")
    report = (load_postgres if postgres else load_generic)(args.database_url, args, world)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "rows": args.events,
                "seconds": round(seconds, 2),
                "rows_per_s": round(args.events / seconds) if seconds else None,
                "setup_seconds": round(setup, 2),
                **report,
                "batch": args.batch,
                "seed": args.seed,
                "end": end.isoformat(),
            }
        )
    )


if __name__ == "__main__":
    main()
