-- The CRM store lives in its own database, next to Airflow's metadata database.
CREATE USER huitouke WITH PASSWORD 'huitouke';
CREATE DATABASE crm OWNER huitouke;
