#!/usr/bin/env bash
# The Airflow UI on this project's dags/ and plugins/ (no example DAGs): `airflow standalone`
# (api-server, scheduler, dag-processor, triggerer) with Airflow's simple auth manager.
# Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated}"
port="${AIRFLOW__API__PORT:-8080}"
passwords="$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
if [ ! -s "$passwords" ]; then
  python - "$passwords" <<'PY'
import json, secrets, sys
with open(sys.argv[1], "w") as f:
    json.dump({"admin": secrets.token_urlsafe(12)}, f)
PY
  chmod 600 "$passwords"
fi
password=$(python -c 'import json, sys; print(json.load(open(sys.argv[1])).get("admin", "?"))' "$passwords")

cat <<TXT
==> Airflow UI: http://localhost:$port
    log in as: admin
    password:  $password   (kept in ${passwords#"$HUITOUKE_HOME"/})
    The DAG huitouke_daily is paused at first: unpause it, or trigger a run, in the UI.
    Logs of this session: $AIRFLOW_HOME/standalone.log   Stop with Ctrl-C.
TXT
exec airflow standalone >>"$AIRFLOW_HOME/standalone.log" 2>&1
