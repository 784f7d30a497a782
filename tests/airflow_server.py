"""Airflow as real processes for the tests, driven through its REST API, as a data engineer would.

:func:`start_airflow` migrates a SQLite metadata database in a temporary ``AIRFLOW_HOME``, creates
the pool ``huitouke_store`` (one slot) and starts three processes, each in its own session:

- ``airflow api-server`` (REST API, and the execution API the task processes talk to),
- ``airflow dag-processor`` (parses this checkout's ``dags/``, with ``plugins/`` first on the path),
- ``airflow scheduler`` (LocalExecutor: every task instance runs as its own process).

By default no triggerer: the runs of tests/test_scheduler.py never defer (their days are long
past, so the send-window sensor has nothing to wait for).
``airflow standalone`` would start the same three plus a triggerer, but hides their logs and ports
behind one process; separate parts give each its log file (``<home>/components/<name>.log``) and
one place to wait for each.

The production topology (docker-compose.yaml, tests/test_production.py) is the same harness with
parameters: the executor and the metadata database (:func:`production_env`: CeleryExecutor,
PostgreSQL, a Redis broker), and the components (:data:`PRODUCTION_COMPONENTS`: a triggerer and
``airflow celery worker`` besides, each with its log file and its readiness wait).

Settings that make the tests quick and predictable (``airflow_env``): DAGs paused at creation,
no examples, a dag-processor that re-parses every 10 s, a scheduler that idles 0.5 s between
loops, retry delays capped at 5 s (``[core] max_task_retry_delay``, so a failing task fails in
seconds, not the DAG's 5 minutes), and by default **no scheduled runs**
(``[scheduler] use_job_schedule = False``): the scheduler runs only what a test asks for —
triggers, clears and backfills — so unpausing the DAG to let them run does not also start a run
for yesterday. :meth:`AirflowServer.restart_scheduler` turns scheduled runs on for a test about
the schedule itself.

Authentication: Airflow's SimpleAuthManager with one admin whose password the harness writes to
the passwords file before the api-server starts, so the client logs in through ``POST
/auth/token`` exactly like any REST client (``simple_auth_manager_all_admins`` would be shorter
but switches authentication off altogether, hiding a missing or expired token).

Every wait polls with a timeout, checks that the processes are still alive, and fails with what
it saw and the tail of each component's log; :meth:`AirflowServer.stop` ends every process of
the trees, all at once (task processes have their own process groups, so the whole tree is
walked, not a group).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil
import pytest
import requests

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "huitouke_daily"
STORE_POOL = "huitouke_store"
USERNAME = "admin"
COMPONENTS = ("api-server", "dag-processor", "scheduler")  # started in this order
TRIGGERER = "triggerer"
CELERY_WORKER = "celery worker"  # `airflow celery worker`: the tasks of the CeleryExecutor
PRODUCTION_COMPONENTS = (*COMPONENTS, TRIGGERER, CELERY_WORKER)  # docker-compose.yaml's services
# The line a Celery worker logs once it consumes its queues ("celery@<host> ready.").
WORKER_READY = " ready."
FINISHED = frozenset({"success", "failed"})  # a dag run's terminal states
UNFINISHED_TASK = frozenset({None, "none", "scheduled", "queued", "running", "up_for_retry", "deferred"})


class AirflowError(RuntimeError):
    """Airflow did not start, a process died, or a wait timed out; the message says what was seen."""


class AirflowApiError(AirflowError):
    """The REST API answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    what: str,
    probe: Callable[[], Any],
    timeout: float,
    report: Callable[[], str] | None = None,
    interval: float = 0.5,
) -> Any:
    """Call ``probe`` until it returns something truthy, and return that. An exception from
    ``probe`` counts as "not yet" unless it is an :class:`AirflowError` (a process died). On
    timeout: :class:`AirflowError` naming ``what``, the last value or exception, and ``report()``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except AirflowError:
            raise
        except Exception as exc:  # not up yet: connection refused, 404 before the DAG is parsed, ...
            last = exc
        if time.monotonic() > deadline:
            details = report() if report else ""
            raise AirflowError(
                f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}\n{details}"
            )
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# huitouke's side: the project, its Connections and caches, for the Airflow processes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HuitoukeData:
    """The files huitouke's tasks use under the harness: the CRM store and the shop database
    (SQLite, Connections ``crm_db`` and ``shop_db``) and the segment snapshot cache. ``crm``: the
    SQLAlchemy URL of a CRM store on a database server instead of the SQLite file."""

    folder: Path
    crm: str | None = None

    @property
    def crm_url(self) -> str:
        return self.crm or f"sqlite:///{self.folder / 'crm.sqlite'}"

    @property
    def crm_connection(self) -> str:
        """``AIRFLOW_CONN_CRM_DB``: a URI for a server (Airflow's form, no driver), JSON for SQLite."""
        if self.crm:
            return self.crm.replace("postgresql+psycopg2://", "postgresql://")
        return json.dumps({"conn_type": "sqlite", "host": str(self.folder / "crm.sqlite")})

    @property
    def shop_url(self) -> str:
        return f"sqlite:///{self.folder / 'shop.sqlite'}"

    def env(self) -> dict[str, str]:
        """huitouke's settings for the Airflow processes (and for :meth:`as_current`)."""
        return {
            "HUITOUKE_HOME": str(ROOT),
            "HUITOUKE_CACHE_DIR": str(self.folder / "cache"),
            "AIRFLOW_CONN_CRM_DB": self.crm_connection,
            "AIRFLOW_CONN_SHOP_DB": json.dumps(
                {"conn_type": "sqlite", "host": str(self.folder / "shop.sqlite")}
            ),
        }

    @contextmanager
    def as_current(self) -> Iterator[None]:
        """Within the block, huitouke code called in the test process (``huitouke.pipeline``,
        ``engine_for("crm_db")``) uses these files, as the tasks do."""
        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.env().items():
                patch.setenv(name, value)
            yield


# ---------------------------------------------------------------------------------------------
# The processes
# ---------------------------------------------------------------------------------------------


def airflow_env(
    home: Path,
    port: int,
    extra: Mapping[str, str],
    scheduled_runs: bool = False,
    executor: str = "LocalExecutor",
    metadata_url: str | None = None,
) -> dict[str, str]:
    """The environment of every Airflow process: this process's, without any ``AIRFLOW*`` or
    ``HUITOUKE*`` setting of the caller (the test session's own Airflow home and Connections),
    plus the harness's settings and ``extra`` (huitouke's settings, :meth:`HuitoukeData.env`;
    :func:`production_env`), which win. ``metadata_url``: Airflow's metadata database, by default
    SQLite in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HUITOUKE"))}
    venv_bin = Path(sys.executable).parent  # not resolved: the virtualenv's bin, where `airflow` is
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    # This checkout's huitouke, not the one the shared virtualenv's editable install points at.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugins"), *filter(None, [env.get("PYTHONPATH")])])
    base_url = f"http://127.0.0.1:{port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url or f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": "utc",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY": "5",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # HS512 wants 64 bytes
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(scheduled_runs),
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # the tasks' INFO lines are what tests read
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            # The scheduler serves task logs on a port of its own (8793 by default): a free one, so
            # that two sessions on one machine do not collide.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
    )
    env.update(extra)
    return env


def production_env(
    metadata_url: str, broker_url: str, data: HuitoukeData, worker_concurrency: int = 4
) -> dict[str, str]:
    """The production topology's settings, natively: the keys of docker-compose.yaml's
    ``x-airflow-common`` ``environment`` with this machine's addresses instead of the services'.

    Mirrors these compose keys:

    - ``AIRFLOW__CORE__EXECUTOR``: ``CeleryExecutor``;
    - ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``: Airflow's metadata database on PostgreSQL
      (``metadata_url``, its own database and role);
    - ``AIRFLOW__CELERY__RESULT_BACKEND``: the same database, ``db+postgresql+psycopg2://...``;
    - ``AIRFLOW__CELERY__BROKER_URL``: Redis (``broker_url``);
    - ``AIRFLOW__CORE__FERNET_KEY``: a key of this run's own;
    - ``AIRFLOW_CONN_CRM_DB``: the CRM store on PostgreSQL, its own database and role
      (``data.crm``); ``AIRFLOW_CONN_SHOP_DB`` and ``HUITOUKE_HOME``: :meth:`HuitoukeData.env`.

    The rest of the compose environment (``AIRFLOW__CORE__LOAD_EXAMPLES``,
    ``AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION``, ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL``,
    ``AIRFLOW__API_AUTH__JWT_SECRET``, ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_*``) is set for every
    harness run by :func:`airflow_env`. Not from compose: ``AIRFLOW__CELERY__WORKER_CONCURRENCY``
    (Celery's default is 16 task slots; a small machine runs the tests)."""
    from cryptography.fernet import Fernet

    env = {
        **data.env(),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        # The driver named, as in the metadata URL: SQLAlchemy 2.1's default for postgresql:// is
        # psycopg 3, which this install has not (compose's image has both).
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata_url}",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
    }
    return env


def _terminate_tree(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM to the process and all its descendants, SIGKILL to what is left after ``timeout``."""
    _terminate_trees([proc], timeout)


def _terminate_trees(procs: list[subprocess.Popen], timeout: float = 15.0) -> None:
    """:func:`_terminate_tree` for several processes at once: one wait for all (a triggerer takes
    10 s to stop its trigger runner; the others need not wait for it)."""
    tree = []
    for proc in procs:
        try:
            parent = psutil.Process(proc.pid)
            tree += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for p in tree:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    for proc in procs:
        proc.wait(timeout=5)  # reap it


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# The components whose health the REST API reports, by the name /monitor/health gives them.
HEARTBEATS = {"dag-processor": "dag_processor", "scheduler": "scheduler", TRIGGERER: "triggerer"}


@dataclass
class AirflowServer:
    """Airflow's api-server, dag-processor and scheduler (and any of ``components``) as processes
    on a free port."""

    home: Path
    port: int
    env: dict[str, str]
    data: HuitoukeData | None = None
    components: tuple[str, ...] = COMPONENTS
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    api: AirflowApi = field(init=False)

    def __post_init__(self) -> None:
        self.api = AirflowApi(self.url, USERNAME, self._password())
        self.api.check = self.check_alive
        self.api.report = self.report

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _password(self) -> str:
        """The admin's password, written before any component starts (SimpleAuthManager keeps
        the passwords of the users it knows, and generates one only for a user missing here)."""
        path = self.home / "passwords.json"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({USERNAME: secrets.token_urlsafe(12)}))
            path.chmod(0o600)
        return json.loads(path.read_text())[USERNAME]

    def log_path(self, name: str) -> Path:
        return self.home / "components" / f"{name.replace(' ', '-')}.log"

    def cli(self, *args: str, timeout: float = 300) -> str:
        """``airflow <args>`` to completion; its output, or :class:`AirflowError` with it."""
        started = time.monotonic()
        result = subprocess.run(
            ["airflow", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        self.timings[f"airflow {args[0]} {args[1] if len(args) > 1 else ''}".strip()] = (
            time.monotonic() - started
        )
        if result.returncode != 0:
            raise AirflowError(
                f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def spawn(self, name: str) -> None:
        """Start ``airflow <name>`` (``celery worker``: two words) in its own session, its output
        appended to its log file."""
        path = self.log_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as out:
            self.processes[name] = subprocess.Popen(
                ["airflow", *name.split()],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        """:class:`AirflowError` with the log tails when a component has exited."""
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise AirflowError(f"Airflow component(s) exited: {dead}\n{self.report()}")

    def report(self) -> str:
        """The tail of each component's log, for a failure message."""
        return "\n".join(
            f"--- {name} ({self.log_path(name)}):\n{_tail(self.log_path(name))}" for name in self.processes
        )

    def health(self) -> dict[str, Any]:
        response = requests.get(f"{self.url}/api/v2/monitor/health", timeout=10)
        response.raise_for_status()
        return response.json()

    def _healthy(self, component: str, since: datetime | None = None) -> bool:
        self.check_alive()
        status = self.health()[component]
        beat = status.get(f"latest_{component}_heartbeat")
        return status["status"] == "healthy" and (since is None or datetime.fromisoformat(beat) > since)

    def _worker_ready(self) -> bool:
        self.check_alive()
        return WORKER_READY in self.log_path(CELERY_WORKER).read_text(errors="replace")

    def wait_ready(self, dag_id: str = DAG_ID, timeout: float = 180) -> dict[str, Any]:
        """Until the API answers, every component is ready (the scheduler, dag-processor and
        triggerer heartbeat, a Celery worker logs that it consumes its queues) and ``dag_id`` is
        parsed from this checkout's ``dags/``. Returns the DAG's details."""
        wait_until("the api-server to answer", lambda: self._healthy("metadatabase"), timeout, self.report)
        for component in self.components:
            if component in HEARTBEATS:
                wait_until(
                    f"the {component} to heartbeat",
                    lambda c=HEARTBEATS[component]: self._healthy(c),
                    timeout,
                    self.report,
                )
            elif component == CELERY_WORKER:
                wait_until("the Celery worker to be ready", self._worker_ready, timeout, self.report)
        details = wait_until(f"DAG {dag_id} to be parsed", lambda: self._parsed(dag_id), timeout, self.report)
        if not str(details["fileloc"]).startswith(str(ROOT / "dags")):
            raise AirflowError(f"DAG {dag_id} was parsed from {details['fileloc']}, not from {ROOT / 'dags'}")
        return details

    def _parsed(self, dag_id: str) -> dict[str, Any] | None:
        self.check_alive()
        errors = self.api.import_errors()
        if errors:
            raise AirflowError(f"DAG import errors: {json.dumps(errors, indent=1)[:4000]}")
        try:
            return self.api.get(f"dags/{dag_id}/details")
        except AirflowApiError as exc:
            if exc.status == 404:
                return None
            raise

    def restart_scheduler(self, scheduled_runs: bool, timeout: float = 90) -> None:
        """Restart the scheduler with scheduled runs on or off (``[scheduler] use_job_schedule``),
        for tests about the schedule itself (unpausing, catch-up)."""
        _terminate_tree(self.processes.pop("scheduler"))
        self.env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = str(scheduled_runs)
        since = datetime.now().astimezone()
        self.spawn("scheduler")
        wait_until(
            "the restarted scheduler to heartbeat",
            lambda: self._healthy("scheduler", since),
            timeout,
            self.report,
        )

    def stop(self) -> None:
        """End every process this server started, with all their children. Safe to repeat."""
        started = time.monotonic()
        _terminate_trees([self.processes.pop(name) for name in reversed(list(self.processes))])
        self.timings["stop"] = time.monotonic() - started


def start_airflow(
    home: Path,
    env: Mapping[str, str],
    data: HuitoukeData | None = None,
    timeout: float = 240,
    *,
    executor: str = "LocalExecutor",
    metadata_url: str | None = None,
    components: tuple[str, ...] = COMPONENTS,
    store_pool_slots: int = 1,
) -> AirflowServer:
    """Migrate, create the store pool, start the components, wait until they are ready.

    ``env`` is huitouke's own settings (``HUITOUKE_HOME``, ``AIRFLOW_CONN_CRM_DB``, ...; for the
    production topology :func:`production_env`, whose executor and database win over
    ``executor`` and ``metadata_url``). ``components``: :data:`COMPONENTS` by default,
    :data:`PRODUCTION_COMPONENTS` adds a triggerer and a Celery worker. ``store_pool_slots``:
    one for a SQLite store, more for PostgreSQL. The components are stopped again if anything
    fails on the way."""
    started = time.monotonic()
    port = free_port()
    server = AirflowServer(
        home=home,
        port=port,
        env=airflow_env(home, port, env, executor=executor, metadata_url=metadata_url),
        data=data,
        components=components,
    )
    atexit.register(server.stop)  # in case the session ends without running its finalizers
    try:
        server.cli("db", "migrate")
        server.spawn("api-server")
        server.spawn("dag-processor")
        description = f"huitouke's CRM store writers, {store_pool_slots} at a time"
        server.cli("pools", "set", STORE_POOL, str(store_pool_slots), description)
        # The scheduler after the pool: a task in a pool that does not exist waits forever.
        for name in components:
            if name not in ("api-server", "dag-processor"):
                server.spawn(name)
        server.wait_ready(timeout=timeout)
    except BaseException:
        server.stop()
        raise
    server.timings["start-up"] = time.monotonic() - started
    log.info(
        "Airflow started in %.1f s (%s) at %s, home %s",
        server.timings["start-up"],
        server.timings,
        server.url,
        home,
    )
    return server


# ---------------------------------------------------------------------------------------------
# The REST client
# ---------------------------------------------------------------------------------------------


def _log_line(item: Any) -> str:
    if isinstance(item, str):
        return item
    return f"{item.get('level', ''):<8} {item.get('event', '')}"


class AirflowApi:
    """Airflow's REST API (``/api/v2``) for one DAG, with business days in the shop's timezone.

    A business day D is the shop-local day [D 00:00, D+1 00:00); its run's logical date is the
    start of that interval (as for scheduled and backfill runs). ``check`` is called at every
    poll of a wait (the server raises there when a process died), ``report`` adds to a timeout's
    message (the components' log tails)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        dag_id: str = DAG_ID,
        shop_timezone: str = "Asia/Shanghai",
        timeout: float = 30.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.dag_id = dag_id
        self.tz = ZoneInfo(shop_timezone)
        self.timeout = timeout
        self._credentials = {"username": username, "password": password}
        self.session = requests.Session()
        self.check: Callable[[], None] = lambda: None
        self.report: Callable[[], str] = lambda: ""

    # --- plumbing ---

    def login(self) -> None:
        """A JWT from ``POST /auth/token`` (SimpleAuthManager), sent as a Bearer token from now on."""
        response = self.session.post(
            f"{self.base_url}/auth/token", json=self._credentials, timeout=self.timeout
        )
        if response.status_code not in (200, 201):
            raise AirflowApiError("POST", "/auth/token", response.status_code, response.text)
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """``/api/v2/<path>``; the decoded JSON, or :class:`AirflowApiError`. Logs in when needed."""
        url = f"{self.base_url}/api/v2/{path.lstrip('/')}"
        if "Authorization" not in self.session.headers:
            self.login()
        response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        if response.status_code == 401:  # expired token
            self.login()
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        if response.status_code >= 400:
            raise AirflowApiError(method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def _all(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paginated collection."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.get(path, limit=100, offset=len(items), **params)
            items.extend(page[key])
            if not page[key] or len(items) >= page["total_entries"]:
                return items

    # --- business days ---

    def day_start(self, day: date) -> datetime:
        """00:00 of ``day`` in the shop's timezone (aware): the logical date of its run."""
        return datetime(day.year, day.month, day.day, tzinfo=self.tz)

    def business_day(self, run: dict[str, Any]) -> date:
        """The business day a dag run covers: its data interval's start, in shop time."""
        return datetime.fromisoformat(run["data_interval_start"]).astimezone(self.tz).date()

    # --- the DAG ---

    def dag(self) -> dict[str, Any]:
        return self.get(f"dags/{self.dag_id}")

    def set_paused(self, paused: bool) -> dict[str, Any]:
        return self.request("PATCH", f"dags/{self.dag_id}", json={"is_paused": paused})

    def pause(self) -> dict[str, Any]:
        return self.set_paused(True)

    def unpause(self) -> dict[str, Any]:
        return self.set_paused(False)

    def import_errors(self) -> list[dict[str, Any]]:
        return self.get("importErrors")["import_errors"]

    def pool(self, name: str = STORE_POOL) -> dict[str, Any]:
        return self.get(f"pools/{name}")

    # --- runs ---

    def trigger_day(self, day: date, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        """A manual run covering exactly business day ``day``: logical date and data interval
        given explicitly (without them Airflow's timetable would give the day *before* the
        logical date). 409 when the day already has a run: clear it instead."""
        start = self.day_start(day)
        body = {
            "logical_date": start.isoformat(),
            "data_interval_start": start.isoformat(),
            "data_interval_end": self.day_start(day + timedelta(days=1)).isoformat(),
            "conf": conf or {},
        }
        return self.post(f"dags/{self.dag_id}/dagRuns", body)

    def run(self, run_id: str) -> dict[str, Any]:
        return self.get(f"dags/{self.dag_id}/dagRuns/{run_id}")

    def runs(self, **filters: Any) -> list[dict[str, Any]]:
        """The DAG's runs, oldest logical date first; ``filters`` are the endpoint's query
        parameters (``run_type="backfill"``, ``state="failed"``, ``logical_date_gte=...``)."""
        filters.setdefault("order_by", "logical_date")
        return self._all(f"dags/{self.dag_id}/dagRuns", "dag_runs", **filters)

    def run_for_day(self, day: date) -> dict[str, Any] | None:
        """The run whose logical date is business day ``day``'s start, if any."""
        start = self.day_start(day).isoformat()
        found = self.runs(logical_date_gte=start, logical_date_lte=start)
        return found[0] if found else None

    def clear_run(self, run_id: str, only_failed: bool = False) -> dict[str, Any]:
        """Clear a run's task instances: the same run (same run_id) is queued and runs again."""
        body = {"dry_run": False, "only_failed": only_failed}
        return self.post(f"dags/{self.dag_id}/dagRuns/{run_id}/clear", body)

    def backfill(
        self,
        first: date,
        last: date,
        reprocess: str = "none",
        max_active_runs: int = 1,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """A backfill of business days ``first`` .. ``last`` (both included): from/to are the
        days' logical dates with the shop's offset (a naive date would be read as UTC). One run
        at a time unless said otherwise (Airflow's default is 10, and the DAG's max_active_runs
        does not bind backfills). ``reprocess``: none, failed or completed. ``dry_run``: the
        answer lists the logical dates it would run, nothing is created."""
        body = {
            "dag_id": self.dag_id,
            "from_date": self.day_start(first).isoformat(),
            "to_date": self.day_start(last).isoformat(),
            "reprocess_behavior": reprocess,
            "max_active_runs": max_active_runs,
            "run_backwards": False,
        }
        return self.post("backfills/dry_run" if dry_run else "backfills", body)

    def backfill_days(self, first: date, last: date, reprocess: str = "none") -> list[date]:
        """The business days a backfill of ``first`` .. ``last`` would run (a dry run)."""
        planned = self.backfill(first, last, reprocess, dry_run=True)["backfills"]
        return [datetime.fromisoformat(b["logical_date"]).astimezone(self.tz).date() for b in planned]

    def backfill_runs(self, backfill: dict[str, Any]) -> list[dict[str, Any]]:
        """The backfill runs in a backfill's range, in date order (the API does not filter by
        backfill id; ranges of the tests' backfills do not overlap in time)."""
        return self.runs(
            run_type="backfill", logical_date_gte=backfill["from_date"], logical_date_lte=backfill["to_date"]
        )

    # --- task instances ---

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        return self._all(f"dags/{self.dag_id}/dagRuns/{run_id}/taskInstances", "task_instances")

    def task_states(self, run_id: str) -> dict[str, str | None]:
        """``task_id`` (``task_id[campaign]`` for a mapped one) -> state."""
        states = {}
        for ti in self.task_instances(run_id):
            name = (
                ti["task_id"]
                if ti["map_index"] < 0
                else f"{ti['task_id']}[{ti['rendered_map_index'] or ti['map_index']}]"
            )
            states[name] = ti["state"]
        return states

    def task_log(self, run_id: str, task_id: str, map_index: int = -1, try_number: int | None = None) -> str:
        """A task instance's log as text, one line per event (the latest try unless said)."""
        if try_number is None:
            ti = next(
                t
                for t in self.task_instances(run_id)
                if t["task_id"] == task_id and t["map_index"] == map_index
            )
            try_number = ti["try_number"]
        path = f"dags/{self.dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        content = self.get(path, map_index=map_index, full_content="true")["content"]
        return "\n".join(_log_line(item) for item in content)

    # --- waiting ---

    def describe(self, run_ids: list[str]) -> str:
        """Each run's state and its task instances' states, for a failure message."""
        lines = []
        for run_id in run_ids:
            try:
                lines.append(f"{run_id}: {self.run(run_id)['state']} {self.task_states(run_id)}")
            except AirflowError as exc:
                lines.append(f"{run_id}: {exc}")
        return "\n".join(lines)

    def wait_for_runs(self, run_ids: list[str], timeout: float = 240) -> list[dict[str, Any]]:
        """Until every run is success or failed; the runs, in the order given."""

        def finished() -> list[dict[str, Any]] | None:
            self.check()
            runs = [self.run(run_id) for run_id in run_ids]
            return runs if all(r["state"] in FINISHED for r in runs) else None

        return wait_until(
            f"runs {run_ids} to finish",
            finished,
            timeout,
            lambda: f"{self.describe(run_ids)}\n{self.report()}",
            1.0,
        )

    def wait_for_run(self, run_id: str, timeout: float = 240) -> dict[str, Any]:
        return self.wait_for_runs([run_id], timeout)[0]

    def wait_for_backfill(self, backfill: dict[str, Any], timeout: float = 400) -> list[dict[str, Any]]:
        """Until every run of the backfill has finished; its runs, in date order (none when it
        created none). Airflow marks the backfill itself complete only every 30 s, so the runs
        are what is waited for."""
        run_ids = [r["dag_run_id"] for r in self.backfill_runs(backfill)]
        return self.wait_for_runs(run_ids, timeout) if run_ids else []


# ---------------------------------------------------------------------------------------------
# The pytest fixture: one Airflow for the whole session
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def airflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServer]:
    """One Airflow (api-server, dag-processor, scheduler) for every test that asks for it, on
    empty huitouke files (``server.data``: the CRM store and shop database, not yet created).
    Use it from a test module with ``pytest_plugins = ["airflow_server"]``. Its home (with the
    components' and the tasks' logs) stays in pytest's temporary folder for a look afterwards."""
    folder = tmp_path_factory.mktemp("airflow-scheduler")
    data = HuitoukeData(folder / "data")
    data.folder.mkdir()
    server = start_airflow(folder / "airflow", data.env(), data)
    try:
        yield server
    finally:
        server.stop()
