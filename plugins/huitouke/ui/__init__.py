"""Campaign results in the Airflow UI: an Airflow 3 plugin (``huitouke.ui.plugin``).

The plugin is registered through the package's ``airflow.plugins`` entry point (``plugins/`` is
excluded from Airflow's plugin scan, see docs/design.md). It mounts a small FastAPI app on the
api-server at ``/huitouke`` with three server-rendered pages read from the CRM store — the daily
campaign plans, the evaluation results, one campaign's detail — and adds them to the UI's
navigation. Aggregates only: no page reads a table that holds personal data. See docs/ui.md.

Importing this package (and ``huitouke.ui.plugin``) is cheap: FastAPI, the store and the
statistics are imported only when the api-server builds the app or a page is requested.
"""
