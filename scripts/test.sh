#!/usr/bin/env bash
# The whole test suite: lint (ruff, with Airflow's AIR rules), then pytest.
# The PostgreSQL tests start their own server from the installed binaries (tests/pg_server.py);
# this script installs Debian's postgresql package when the binaries are missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing PostgreSQL server binaries (apt-get install postgresql)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "warning: no PostgreSQL server binaries found; the PostgreSQL tests will be skipped (or fail under CI=true)" >&2
  fi
fi

echo "==> ruff check"
ruff check .
ruff format --check --quiet . || { echo "ruff format would change files: run 'ruff format .'" >&2; exit 1; }

echo "==> pytest"
# On every core (pytest-xdist), one test module per worker: a module's fixtures (an Airflow run
# of several days, a store) are built once, as in a serial run. Each worker has its own Airflow
# home, stores and PostgreSQL server (tests/conftest.py). The slowest tests end the report: where
# the time budget goes.
exec python -m pytest -n auto --dist loadfile --durations=20 "$@"
