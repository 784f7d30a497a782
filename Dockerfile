# huitouke on the official Airflow image: the image's Airflow plus this project's package,
# installed with the same pinned versions the tests use (constraints.txt).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:0 pyproject.toml constraints.txt README.md /opt/huitouke/
COPY --chown=airflow:0 plugins /opt/huitouke/plugins
RUN pip install --no-cache-dir -c /opt/huitouke/constraints.txt /opt/huitouke
