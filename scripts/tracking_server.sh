#!/usr/bin/env bash
# A shared MLflow tracking server backed by PostgreSQL, on loopback, for many agents.
#
#   bash scripts/tracking_server.sh start DIR [PG_PORT] [MLFLOW_PORT]   # prints the tracking URI
#   bash scripts/tracking_server.sh stop DIR
#
# DIR holds the database cluster, the artifacts and the logs. PostgreSQL always listens on
# 127.0.0.1 only (only the mlflow server talks to it). For a lab, serve MLflow to the other
# machines and give each agent `--tracking-uri http://HOST:MLFLOW_PORT` (README: "Many agents,
# one tracking server"):
#
#   VRAM_ML_TRACKING_HOST=0.0.0.0 VRAM_ML_TRACKING_ALLOWED_HOSTS='mlflow.lab,10.0.0.*' \
#     bash scripts/tracking_server.sh start /srv/vram-ml-tracking 55432 5000
#
# Environment: VRAM_ML_TRACKING_HOST (bind address, default 127.0.0.1),
# VRAM_ML_TRACKING_ALLOWED_HOSTS (mlflow --allowed-hosts; default: localhost and private IPs),
# VRAM_ML_TRACKING_WORKERS (mlflow --workers, default 2).
set -euo pipefail

command=${1:?usage: tracking_server.sh start|stop DIR [PG_PORT] [MLFLOW_PORT]}
dir=$(realpath -m "${2:?DIR is required}")
pg_port=${3:-55432}
mlflow_port=${4:-55000}
venv_bin=$(dirname "$(command -v mlflow || echo .venv/bin/mlflow)")
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
host=${VRAM_ML_TRACKING_HOST:-127.0.0.1}
workers=${VRAM_ML_TRACKING_WORKERS:-2}
allowed=()
if [ -n "${VRAM_ML_TRACKING_ALLOWED_HOSTS:-}" ]; then
  allowed=(--allowed-hosts "$VRAM_ML_TRACKING_ALLOWED_HOSTS")
fi
case "$host" in
  0.0.0.0|::) probe_host=127.0.0.1; public_host=$(hostname -f 2>/dev/null || hostname) ;;
  *) probe_host=$host; public_host=$host ;;
esac

as_postgres() {
  # PostgreSQL refuses to run as root; CI and these machines run as root.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  [ -n "$pg_bin" ] || { echo "error: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
  mkdir -p "$dir/artifacts" "$dir/run"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres "$dir"
    runuser -u postgres -- test -x "$dir" || {
      echo "error: user postgres cannot reach $dir (a parent folder is private); use a folder" \
        "under /tmp or /srv" >&2; exit 1; }
  fi
  if [ ! -f "$dir/pg/PG_VERSION" ]; then
    as_postgres "$pg_bin/initdb" -D "$dir/pg" -U postgres --auth=trust >"$dir/initdb.log" 2>&1
  fi
  as_postgres "$pg_bin/pg_ctl" -D "$dir/pg" -l "$dir/postgres.log" -w \
    -o "-p $pg_port -k $dir/run -c listen_addresses=127.0.0.1" start >/dev/null
  as_postgres "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='mlflow'" | grep -q 1 \
    || as_postgres "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres mlflow
  setsid "$venv_bin/mlflow" server \
    --backend-store-uri "postgresql+psycopg2://postgres@127.0.0.1:$pg_port/mlflow" \
    --artifacts-destination "$dir/artifacts" --host "$host" --port "$mlflow_port" \
    --workers "$workers" ${allowed[@]+"${allowed[@]}"} >"$dir/mlflow.log" 2>&1 < /dev/null &
  echo $! >"$dir/mlflow.pid"
  for _ in $(seq 1 240); do
    if curl -sf "http://$probe_host:$mlflow_port/health" >/dev/null 2>&1; then
      echo "http://$public_host:$mlflow_port"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null; then
      echo "error: mlflow server exited (see $dir/mlflow.log)" >&2
      exit 1
    fi
    sleep 0.25
  done
  echo "error: mlflow server did not answer on port $mlflow_port (see $dir/mlflow.log)" >&2
  exit 1
}

stop() {
  if [ -f "$dir/mlflow.pid" ]; then
    local pid
    pid=$(cat "$dir/mlflow.pid")
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do  # up to 5 s for a clean exit (its state is all in PostgreSQL)
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$dir/mlflow.pid"
  fi
  if [ -f "$dir/pg/postmaster.pid" ]; then
    as_postgres "$pg_bin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null || true
  fi
}

case "$command" in
  start) start ;;
  stop) stop ;;
  *) echo "error: unknown command $command (start|stop)" >&2; exit 2 ;;
esac
