#!/usr/bin/env bash
# The admin console's third-party browser assets: installed from the npm registry exactly as
# package-lock.json pins them (`npm ci`, only when node_modules is missing or older than the
# lock file), then copied into src/audit_service/console/static/vendor/ (git-ignored), where
# the service serves them and the wheel build picks them up (setup.py refuses to build a
# wheel without them). Nothing third-party is committed. `make run` and `make test` call this.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
    echo "build-assets: npm is required (Node.js 18+)" >&2
    exit 1
fi
stamp=node_modules/.package-lock.json  # npm's own record of what node_modules holds
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] \
    || [ ! -d node_modules/htmx.org ] || [ ! -d node_modules/uplot ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
vendor=src/audit_service/console/static/vendor
mkdir -p "$vendor"
cp node_modules/htmx.org/dist/htmx.min.js "$vendor/htmx.min.js"
cp node_modules/uplot/dist/uPlot.iife.min.js "$vendor/uPlot.iife.min.js"
cp node_modules/uplot/dist/uPlot.min.css "$vendor/uPlot.min.css"
echo "build-assets: htmx $(node -p 'require("./node_modules/htmx.org/package.json").version')," \
    "uPlot $(node -p 'require("./node_modules/uplot/package.json").version') in $vendor" >&2
