# huitouke on the official Airflow image: the image's Airflow plus this project's package with its
# production extras (sms: the SMS providers' SDKs; celery: the CeleryExecutor), installed with the
# same pinned versions the tests use (constraints.txt). No dev extras. docker-compose.yaml builds it;
# tests/test_deploy.py keeps its Airflow and Python versions equal to pyproject.toml's and
# constraints.txt's.
FROM apache/airflow:3.3.2-python3.11

USER airflow
COPY --chown=airflow:0 pyproject.toml constraints.txt README.md /opt/huitouke/
COPY --chown=airflow:0 plugins /opt/huitouke/plugins
RUN pip install --no-cache-dir -c /opt/huitouke/constraints.txt "/opt/huitouke[sms,celery]"
