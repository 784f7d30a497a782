"""huitouke (回头客): repeat-customer marketing on Airflow 3.

The domain library. Everything here is importable and testable without a running Airflow;
the DAG files under ``dags/`` only wire these functions into tasks.
"""

__version__ = "0.1.0"
