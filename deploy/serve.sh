#!/usr/bin/env bash
# Production: the Dagster daemon (sensors, run queue, run monitoring, run retries) and the
# webserver on the instance in deploy/dagster.yaml (history in PostgreSQL at DAGSTER_PG_URL).
# Stops both when either exits or on SIGTERM/SIGINT, so a service manager sees one unit.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DAGSTER_PG_URL:?set DAGSTER_PG_URL to the instance database, e.g. postgresql://user:pw@host:5432/dagster}"
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_prod}"
mkdir -p "$DAGSTER_HOME"
ln -sfn "$PWD/deploy/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
bin="${CFREC_VENV:-$PWD/.venv}/bin"
# The training pool's limit, set before anything is queued: the queue only honours a pool it
# already knows, so two retrains queued in the very first second could otherwise both start.
"$bin/dagster" instance concurrency set cfrec_training 1 >/dev/null

"$bin/dagster-daemon" run -w workspace.yaml &
daemon=$!
"$bin/dagster-webserver" -h "${CFREC_HOST:-127.0.0.1}" -p "${CFREC_PORT:-3000}" -w workspace.yaml &
web=$!
trap 'kill -TERM "$daemon" "$web" 2>/dev/null || true; wait' TERM INT
wait -n "$daemon" "$web" || status=$?
kill -TERM "$daemon" "$web" 2>/dev/null || true
wait
exit "${status:-0}"
