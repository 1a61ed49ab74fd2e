#!/usr/bin/env bash
# Start or stop the local services on 127.0.0.1: an MLflow tracking server over the project's
# SQLite store and a Prefect server. Process ids go to .emoreason/*.pid; `stop` kills by pid.
#   infra/services.sh start|stop|status
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.emoreason
MLFLOW_PORT=${MLFLOW_PORT:-5000}
PREFECT_PORT=${PREFECT_PORT:-4200}
mkdir -p "$RUN"

start() {
  if [ ! -f "$RUN/mlflow.pid" ] || ! kill -0 "$(cat "$RUN/mlflow.pid")" 2>/dev/null; then
    mlflow server --host 127.0.0.1 --port "$MLFLOW_PORT" \
      --backend-store-uri sqlite:///mlflow.db --default-artifact-root ./mlartifacts \
      >"$RUN/mlflow.log" 2>&1 &
    echo $! >"$RUN/mlflow.pid"
  fi
  if [ ! -f "$RUN/prefect.pid" ] || ! kill -0 "$(cat "$RUN/prefect.pid")" 2>/dev/null; then
    prefect server start --host 127.0.0.1 --port "$PREFECT_PORT" >"$RUN/prefect.log" 2>&1 &
    echo $! >"$RUN/prefect.pid"
  fi
  echo "MLflow:  http://127.0.0.1:$MLFLOW_PORT   (export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT)"
  echo "Prefect: http://127.0.0.1:$PREFECT_PORT  (export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api)"
}

stop() {
  for name in mlflow prefect; do
    if [ -f "$RUN/$name.pid" ]; then
      kill "$(cat "$RUN/$name.pid")" 2>/dev/null || true
      rm -f "$RUN/$name.pid"
    fi
  done
}

status() {
  for name in mlflow prefect; do
    if [ -f "$RUN/$name.pid" ] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
      echo "$name: running (pid $(cat "$RUN/$name.pid"))"
    else
      echo "$name: stopped"
    fi
  done
}

"${1:-status}"
