#!/usr/bin/env bash
# The CRM store's database and its own user, next to Airflow's metadata database (docker-compose.yaml).
# The postgres image runs this once, when its data volume is first created, as the superuser
# POSTGRES_USER (airflow, the metadata database's owner). The password comes from
# HUITOUKE_CRM_DB_PASSWORD (.env); psql quotes it (:'crm_password'), so no character of it can
# break the statement. Changing it later: ALTER USER huitouke PASSWORD '...' (docs/deploy.md).
set -euo pipefail

: "${HUITOUKE_CRM_DB_PASSWORD:?HUITOUKE_CRM_DB_PASSWORD is not set (see .env.example)}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v crm_password="$HUITOUKE_CRM_DB_PASSWORD" <<'SQL'
CREATE USER huitouke WITH PASSWORD :'crm_password';
CREATE DATABASE crm OWNER huitouke;
REVOKE ALL ON DATABASE crm FROM PUBLIC;
SQL
