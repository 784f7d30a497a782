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
EXTERNAL_VIEWS: list[dict[str, Any]] = [
    {
        "name": "Campaign plans 活动计划",
        "href": f"{URL_PREFIX.lstrip('/')}/",
        "url_route": "huitouke-plans",
        "destination": "nav",
        "category": "huitouke",
        "icon": f"{URL_PREFIX.lstrip('/')}/icon.svg",
        "nav_top_level": True,
    },
    {
        "name": "Campaign results 活动效果",
        "href": f"{URL_PREFIX.lstrip('/')}/results",
        "url_route": "huitouke-results",
        "destination": "nav",
        "category": "huitouke",
        "icon": f"{URL_PREFIX.lstrip('/')}/icon.svg",
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
