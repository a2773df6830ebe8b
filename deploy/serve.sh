#!/usr/bin/env bash
# Production: the Dagster daemon (sensors, run queue, run monitoring, run retries) and the
# webserver on the instance in deploy/dagster.yaml (history in PostgreSQL at DAGSTER_PG_URL).
# Stops both when either exits or on SIGTERM/SIGINT, so a service manager sees one unit.
# Its own instance home (DAGSTER_HOME, default .dagster_prod/) and data folder (CFREC_DATA_DIR,
# default data/prod/: models, tuning result, serving folder), never the dev ones unless set so.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DAGSTER_PG_URL:?set DAGSTER_PG_URL to the instance database, e.g. postgresql://user:pw@host:5432/dagster}"
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_prod}"
export CFREC_DATA_DIR="${CFREC_DATA_DIR:-$PWD/data/prod}"
instance="$DAGSTER_HOME/dagster.yaml"
# Never link over another instance's file (the dev one, say): that instance would then need, and
# write to, the production database.
if [ -e "$instance" ] && [ "$(readlink -f "$instance")" != "$(readlink -f deploy/dagster.yaml)" ]; then
  echo "serve.sh: $instance belongs to another Dagster instance; production needs a home of its own:" \
    "unset DAGSTER_HOME (default .dagster_prod/) or point it at an empty folder" >&2
  exit 1
fi
mkdir -p "$DAGSTER_HOME" "$CFREC_DATA_DIR"
ln -sfn "$PWD/deploy/dagster.yaml" "$instance"
echo "serve.sh: instance $DAGSTER_HOME (history in DAGSTER_PG_URL), data $CFREC_DATA_DIR"
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
