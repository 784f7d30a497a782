"""The Airflow plugin: the FastAPI app at ``/huitouke`` and its entries in the UI's navigation.

Registered as ``huitouke = huitouke.ui.plugin:HuitoukePlugin`` in the ``airflow.plugins`` entry
point group (pyproject.toml). Every Airflow process loads plugins, the task runner included (for
macros), so this module imports nothing heavy: the FastAPI app is built on first access to
``fastapi_apps``, which only the api-server (and ``airflow plugins``) asks for.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/huitouke"

# Nav entries (Airflow 3 "external views"). `href` is relative (no leading slash): the UI resolves
# it against its <base href>, so it also works when Airflow is served under a sub-path. With a
# `url_route` the page is shown inside the Airflow UI (an iframe at /plugin/<url_route>).
# Airflow shows a top-level entry as its icon over its name in a 56-pixel box at 10 px, cut with
# an ellipsis: the names are short enough to show whole (tests/test_ui_browser.py measures them in
# the UI), and each entry has its own icon (huitouke.ui.app.ICONS).
EXTERNAL_VIEWS: list[dict[str, Any]] = [
    {
        "name": "Plans 计划",
        "href": f"{URL_PREFIX.lstrip('/')}/",
        "url_route": "huitouke-plans",
        "destination": "nav",
        "category": "huitouke",
        "icon": f"{URL_PREFIX.lstrip('/')}/icon-plans.svg",
        "nav_top_level": True,
    },
    {
        "name": "Lift 效果",
        "href": f"{URL_PREFIX.lstrip('/')}/results",
        "url_route": "huitouke-results",
        "destination": "nav",
        "category": "huitouke",
        "icon": f"{URL_PREFIX.lstrip('/')}/icon-results.svg",
        "nav_top_level": True,
    },
]


class HuitoukePlugin(AirflowPlugin):
    """回头客 campaign plans and results in the Airflow UI (read-only, aggregates only)."""

    name = "huitouke"
    external_views = EXTERNAL_VIEWS

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        from huitouke.ui.app import app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "huitouke campaign results"}]
