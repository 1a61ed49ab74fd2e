#!/bin/sh
# MLflow's database beside Prefect's (POSTGRES_DB). The postgres image runs this once, when its
# volume is empty.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"$MLFLOW_DB\""
