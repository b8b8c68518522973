# syntax=docker/dockerfile:1
# audit-service image: `docker build -t audit-service .`
# Run it with a database and a secret, e.g. through docker-compose.yml.

# ---- assets: the admin console's htmx/uPlot, exactly as package-lock.json pins them ----------
FROM node:20-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
COPY scripts/build-assets.sh ./scripts/
RUN scripts/build-assets.sh

# ---- builder: build the wheel and install it (with its dependencies) into a venv ----------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

RUN python -m venv /opt/venv

WORKDIR /src
# pyproject.toml names README.md as the package description.
# The exact dependency set CI tested (requirements.lock, with the `redis` extra that lets
# replicas share rate limits), first and on its own so the layer is cached across code
# changes. Every dependency ships manylinux wheels for CPython 3.11: no compiler needed.
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install -r requirements.lock
# setup.py refuses to build a wheel without the console's vendor assets (from the stage above).
COPY setup.py pyproject.toml README.md ./
COPY src ./src
COPY --from=assets /src/src/audit_service/console/static/vendor ./src/audit_service/console/static/vendor
# The bundled client library (the audit-service-client distribution's sources).
COPY clients/python/src ./clients/python/src
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed.
# The `redis` extra lets replicas share rate limits (AUDIT_RATE_LIMIT_STORAGE=redis://…).
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl

# ---- runtime: the venv, the migrations, an unprivileged user -------------------------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUDIT_ENV=production \
    PORT=8000

RUN groupadd --system --gid 10001 audit \
    && useradd --system --uid 10001 --gid audit --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin audit

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# The migrations ship inside the wheel (audit_service/migrations): `audit-service migrate`
# needs nothing from the source tree.
# ./var holds the default SQLite database and the development key: the only writable place.
RUN mkdir -p /app/var && chown audit:audit /app/var

USER audit:audit
EXPOSE 8000

# No curl in slim images: ask /healthz with the standard library (non-2xx raises → exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=4)"]

# Exec form: uvicorn is PID 1 and receives SIGTERM for a graceful shutdown.
CMD ["audit-service", "serve", "--host", "0.0.0.0"]
