#!/usr/bin/env bash
# The contract check: TypeScript types generated from openapi.json must let a small client
# (tests/ts/client.ts: log in, list activity, read a typed Problem) compile under
# `tsc --strict`. Tools come only from package-lock.json (npm ci: the npm registry, nothing
# else); the generated file is not committed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
    echo "check-typescript-client: npm is required (Node.js 18+)" >&2
    exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
npx --no-install openapi-typescript openapi.json --output tests/ts/openapi.d.ts --silent
npx --no-install tsc --strict --noEmit -p tests/ts/tsconfig.json
echo "check-typescript-client: openapi.json types compile with tsc --strict"
