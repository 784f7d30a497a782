#!/usr/bin/env bash
# Set-up on a fresh clone, and a quick no-op when nothing changed:
#   1. .venv with the pinned install (pyproject.toml + constraints.txt),
#   2. Airflow's metadata database in .airflow/ (SQLite),
#   3. the CRM store's migrations (Connection crm_db, data/crm.sqlite by default).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "huitouke needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi

stamp=.venv/.huitouke-installed
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "==> installing huitouke and its pinned dependencies (constraints.txt)"
  .venv/bin/python -m pip install -qq --upgrade pip
  .venv/bin/python -m pip install -qq -c constraints.txt -e '.[dev]'
  # A build leftover: Airflow puts plugins/ on sys.path, where this folder would make the
  # huitouke UI plugin's entry point show up twice (an import error in the UI).
  rm -rf plugins/huitouke.egg-info
  touch "$stamp"
fi

mkdir -p "$AIRFLOW_HOME" data
airflow_stamp="$AIRFLOW_HOME/.huitouke-migrated"
if [ ! -f "$airflow_stamp" ] || [ "$stamp" -nt "$airflow_stamp" ]; then
  echo "==> migrating Airflow's metadata database ($AIRFLOW_HOME)"
  airflow db migrate > "$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
  touch "$airflow_stamp"
fi
if [ ! -f "$AIRFLOW_HOME/.huitouke-pool" ]; then
  # One slot: the embedded SQLite store has one writer at a time (store.pool, docs/design.md).
  airflow pools set huitouke_store 1 "huitouke CRM store writers (SQLite: one)" > "$AIRFLOW_HOME/pools.log" 2>&1 \
    || { cat "$AIRFLOW_HOME/pools.log" >&2; exit 1; }
  touch "$AIRFLOW_HOME/.huitouke-pool"
fi

huitouke db upgrade
