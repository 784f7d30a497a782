# Environment for running huitouke from this checkout. Sourced by the Makefile's commands;
# `source scripts/env.sh` in your own shell to use `airflow` and `huitouke` by hand.
# Values already set in the environment win, so a deployment can point elsewhere.
HUITOUKE_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HUITOUKE_HOME
export PATH="$HUITOUKE_HOME/.venv/bin:$PATH"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$HUITOUKE_HOME/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$HUITOUKE_HOME/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$HUITOUKE_HOME/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-True}"
# Embedded defaults: the CRM store and the demo shop's order database are SQLite files in data/.
if [ -z "${AIRFLOW_CONN_CRM_DB:-}" ]; then
  export AIRFLOW_CONN_CRM_DB="{\"conn_type\": \"sqlite\", \"host\": \"$HUITOUKE_HOME/data/crm.sqlite\"}"
fi
if [ -z "${AIRFLOW_CONN_SHOP_DB:-}" ]; then
  export AIRFLOW_CONN_SHOP_DB="{\"conn_type\": \"sqlite\", \"host\": \"$HUITOUKE_HOME/data/shop.sqlite\"}"
fi
