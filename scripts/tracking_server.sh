#!/usr/bin/env bash
# A shared MLflow tracking server backed by PostgreSQL, on loopback, for many agents.
#
#   bash scripts/tracking_server.sh start DIR [PG_PORT] [MLFLOW_PORT]   # prints the tracking URI
#   bash scripts/tracking_server.sh stop DIR
#
# DIR holds the database cluster, the artifacts and the logs. For a lab, run the same two programs
# on a host every agent can reach (bind --host to that host's address instead of 127.0.0.1) and
# give each agent `--tracking-uri http://HOST:MLFLOW_PORT`.
set -euo pipefail

command=${1:?usage: tracking_server.sh start|stop DIR [PG_PORT] [MLFLOW_PORT]}
dir=$(realpath -m "${2:?DIR is required}")
pg_port=${3:-55432}
mlflow_port=${4:-55000}
venv_bin=$(dirname "$(command -v mlflow || echo .venv/bin/mlflow)")
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

as_postgres() {
  # PostgreSQL refuses to run as root; CI and these machines run as root.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  [ -n "$pg_bin" ] || { echo "error: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
  mkdir -p "$dir/artifacts" "$dir/run"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir"; fi
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
    --artifacts-destination "$dir/artifacts" --host 127.0.0.1 --port "$mlflow_port" \
    --workers 2 >"$dir/mlflow.log" 2>&1 < /dev/null &
  echo $! >"$dir/mlflow.pid"
  for _ in $(seq 1 120); do
    if curl -sf "http://127.0.0.1:$mlflow_port/health" >/dev/null 2>&1; then
      echo "http://127.0.0.1:$mlflow_port"
      return 0
    fi
    sleep 0.5
  done
  echo "error: mlflow server did not answer on port $mlflow_port (see $dir/mlflow.log)" >&2
  exit 1
}

stop() {
  if [ -f "$dir/mlflow.pid" ]; then
    kill -- "-$(cat "$dir/mlflow.pid")" 2>/dev/null || kill "$(cat "$dir/mlflow.pid")" 2>/dev/null || true
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
