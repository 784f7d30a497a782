#!/usr/bin/env bash
# The whole test suite: lint (ruff, with Airflow's AIR rules), then pytest.
# It installs the Debian packages the tests need when they are missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# Debian packages the suite runs for real: PostgreSQL's server (tests/pg_server.py), Redis (the
# Celery broker, tests/redis_server.py), chromium with its driver and a CJK font (the UI pages in
# a headless browser, tests/test_ui_browser.py), and docker-compose (its parser and schema check
# docker-compose.yaml, tests/test_deploy.py).
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || missing+=(fonts-wqy-zenhei)
# Compose 1.29's parser and the Compose Specification's schema (tests/test_deploy.py; no engine).
[ -e /usr/lib/python3/dist-packages/compose/config/compose_spec.json ] || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing Debian packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: missing ${missing[*]}; the tests that need them are skipped (or fail under CI=true)" >&2
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
