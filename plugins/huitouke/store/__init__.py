"""The CRM store: schema, Alembic migrations, and how to reach it through an Airflow Connection."""
