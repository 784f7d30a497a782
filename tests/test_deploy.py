"""The deployment files, checked without Docker: docker-compose.yaml, .env.example, Dockerfile.

No Docker engine runs where the suite runs, so the compose file is validated instead: against the
Compose Specification's JSON schema as Debian's ``docker-compose`` package ships it (Compose 1.29,
installed by scripts/test.sh like the suite's other Debian packages; nothing is downloaded at test
time), after YAML has resolved its anchors and merge keys; by that package's own parser
(``docker-compose config``, which reads and interpolates the file with .env.example's values and
needs no Docker engine); and against the code: the Connections the
configuration uses, the store's pool, the versions pinned in pyproject.toml and constraints.txt.
Each check names the file and the key that disagree. The CRM store's init script is run against
the suite's real PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (ROOT / "docker-compose.yaml").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load(COMPOSE_TEXT)  # anchors and << merge keys resolved
SERVICES: dict = COMPOSE["services"]
COMMON = COMPOSE["x-airflow-common"]
COMMON_ENV: dict = COMMON["environment"]
# Debian's docker-compose (1.29): the Compose Specification's schema inside its Python package.
SCHEMA_PATH = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
ENV_EXAMPLE_TEXT = (ROOT / ".env.example").read_text(encoding="utf-8")
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "flower",
)
DEMO_SERVICES = {"gateway", "smtp-sink"}
EXPECTED_SERVICES = {"postgres", "redis", *AIRFLOW_SERVICES, *DEMO_SERVICES}
ONE_SHOT = {"airflow-init"}
MOUNTED_FOLDERS = {
    "dags": "/opt/airflow/dags",
    "plugins": "/opt/airflow/plugins",
    "include": "/opt/airflow/include",
}


def _env_example() -> dict[str, str]:
    """The variables .env.example sets (``NAME=value`` lines; comments are documentation)."""
    found = {}
    for line in ENV_EXAMPLE_TEXT.splitlines():
        match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match:
            found[match[1]] = match[2]
    return found


ENV_EXAMPLE = _env_example()


def _variables_read(text: str) -> set[str]:
    """The ``${VAR}`` names compose interpolates in ``text`` (``$${...}`` is a literal ``$``)."""
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def _conn_env(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def _connections_the_code_uses() -> list[str]:
    """The Connection ids include/huitouke.yaml names, and the SMS and e-mail providers' defaults."""
    from huitouke.config import load_settings
    from huitouke.deliver.providers import aliyun, email, twilio, webhook

    settings = load_settings()
    ids = {settings.store.conn_id, settings.delivery.unsubscribe_conn_id}
    ids |= {source.conn_id for source in (settings.intake.sql, settings.intake.http) if source}
    ids |= {c.conn_id for c in (settings.delivery.sms, settings.delivery.email) if c.conn_id}
    if settings.delivery.aliyun_relay_conn_id:
        ids.add(settings.delivery.aliyun_relay_conn_id)
    ids |= {module.DEFAULT_CONN_ID for module in (aliyun, email, twilio, webhook)}
    return sorted(ids)


def _readme_connections() -> list[str]:
    """The Connection ids of README.md's "Connections" table."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("### Connections", 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)


def _substituted(value: str) -> str:
    """``value`` with every ``${VAR...}`` replaced by a stand-in (placeholders are empty)."""
    return re.sub(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}", lambda m: f"<{m[1]}>", value)


# -- the Compose Specification -------------------------------------------------------------------


def _require_docker_compose() -> None:
    """Debian's docker-compose package; under CI=true its absence fails (scripts/test.sh installs it)."""
    if SCHEMA_PATH.exists() and shutil.which("docker-compose"):
        return
    message = "Debian's docker-compose package is missing (apt-get install docker-compose)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _schema_errors(document: dict) -> list[str]:
    _require_docker_compose()
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"docker-compose.yaml: {'.'.join(str(p) for p in error.absolute_path) or '(top level)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_specification():
    assert _schema_errors(COMPOSE) == []


def test_docker_compose_reads_the_file_with_the_example_environment(tmp_path):
    """Compose's own parser: variables interpolated from an .env built from .env.example (empty
    secrets filled in), every profile's services listed, no error."""
    _require_docker_compose()
    filled = {name: value or f"example-{name.lower()}" for name, value in _env_example().items()}
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in filled.items()), encoding="utf-8")
    command = ["docker-compose", "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yaml")]
    for profile in ("demo", "flower"):
        command += ["--profile", profile]
    checked = subprocess.run([*command, "config", "-q"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, f"docker-compose.yaml: docker-compose config: {checked.stderr[-2000:]}"
    listed = subprocess.run([*command, "config", "--services"], capture_output=True, text=True, check=True)
    assert set(listed.stdout.split()) == EXPECTED_SERVICES


def test_the_schema_check_rejects_a_misspelt_service_key():
    """The validation is not vacuous: a key the specification does not know is reported."""
    broken = {"services": {"redis": {"image": "redis:7.2-bookworm", "helthcheck": {"test": ["CMD", "true"]}}}}
    assert any("helthcheck" in error for error in _schema_errors(broken))


def test_named_volumes_are_declared():
    named = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/", "$")):
                assert source in named, (
                    f"docker-compose.yaml: services.{name}.volumes: {source!r} is not under volumes:"
                )


def test_bind_mounted_files_exist():
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (
                    f"docker-compose.yaml: services.{name}.volumes: {source} does not exist"
                )


# -- services ------------------------------------------------------------------------------------


def test_every_expected_service_exists():
    missing = EXPECTED_SERVICES - set(SERVICES)
    assert not missing, f"docker-compose.yaml: services: missing {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES - ONE_SHOT))
def test_long_running_service_has_a_healthcheck(name):
    test = SERVICES[name].get("healthcheck", {}).get("test")
    assert test, f"docker-compose.yaml: services.{name}.healthcheck.test is missing"


def test_init_runs_once():
    init = SERVICES["airflow-init"]
    assert init.get("restart") == "no", "docker-compose.yaml: services.airflow-init.restart must be 'no'"
    waiting = [
        name
        for name in AIRFLOW_SERVICES
        if name != "airflow-init"
        and SERVICES[name]["depends_on"].get("airflow-init", {}).get("condition")
        != "service_completed_successfully"
    ]
    assert not waiting, (
        f"docker-compose.yaml: services.{waiting}.depends_on: airflow-init must complete first"
    )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_targets_exist(name):
    targets = SERVICES[name].get("depends_on") or {}
    unknown = set(targets) - set(SERVICES)
    assert not unknown, f"docker-compose.yaml: services.{name}.depends_on: no service {sorted(unknown)}"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_has_the_common_environment(name):
    env = SERVICES[name]["environment"]
    differ = sorted(key for key, value in COMMON_ENV.items() if env.get(key) != value)
    assert not differ, (
        f"docker-compose.yaml: services.{name}.environment differs from x-airflow-common in {differ}"
    )
    own = sorted(key for key in set(env) - set(COMMON_ENV) if key.startswith(("AIRFLOW__", "AIRFLOW_CONN_")))
    assert not own, (
        f"docker-compose.yaml: services.{name}.environment sets {own}; Airflow settings belong in x-airflow-common"
    )


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_mounts_dags_plugins_and_include(name):
    mounts = dict(volume.split(":", 2)[:2][::-1] for volume in SERVICES[name].get("volumes", []))
    for folder, target in MOUNTED_FOLDERS.items():
        assert mounts.get(target) == f"./{folder}", (
            f"docker-compose.yaml: services.{name}.volumes: ./{folder} is not mounted at {target}"
        )


def test_demo_profile_holds_the_gateway_and_the_smtp_sink_only():
    demo = {name for name, service in SERVICES.items() if "demo" in service.get("profiles", [])}
    assert demo == DEMO_SERVICES, f"docker-compose.yaml: services with profile demo: {sorted(demo)}"


def test_flower_is_behind_its_profile():
    assert SERVICES["flower"].get("profiles") == ["flower"], "docker-compose.yaml: services.flower.profiles"


def test_gateway_serves_the_webhook_on_the_compose_network():
    command = SERVICES["gateway"]["command"]
    assert command[0] == "gateway" and "--allow-remote" in command and "0.0.0.0" in command, (
        "docker-compose.yaml: services.gateway.command must be `gateway --host 0.0.0.0 --allow-remote ...`"
    )


# -- Airflow's settings ----------------------------------------------------------------------------


def test_executor_is_celery():
    assert COMMON_ENV["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", (
        "docker-compose.yaml: x-airflow-common.environment.AIRFLOW__CORE__EXECUTOR"
    )


def test_broker_is_the_redis_service():
    url = urlsplit(_substituted(COMMON_ENV["AIRFLOW__CELERY__BROKER_URL"]))
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379), (
        "docker-compose.yaml: x-airflow-common.environment.AIRFLOW__CELERY__BROKER_URL must be redis://...@redis:6379"
    )
    command = SERVICES["redis"]["command"]
    required = command[command.index("--requirepass") + 1] if "--requirepass" in command else ""
    assert _substituted(required) == url.password, (
        "docker-compose.yaml: services.redis.command's --requirepass differs from the broker URL's password"
    )


@pytest.mark.parametrize("key", ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"])
def test_metadata_database_is_airflow_on_the_postgres_service(key):
    url = urlsplit(_substituted(COMMON_ENV[key]))
    assert (url.hostname, url.username, url.path) == ("postgres", "airflow", "/airflow"), (
        f"docker-compose.yaml: x-airflow-common.environment.{key} must be airflow@postgres/airflow"
    )


def test_execution_api_points_at_the_api_server():
    url = urlsplit(COMMON_ENV["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.hostname == "airflow-apiserver" and url.path == "/execution/", (
        "docker-compose.yaml: x-airflow-common.environment.AIRFLOW__CORE__EXECUTION_API_SERVER_URL"
    )
    assert "8080:8080" in SERVICES["airflow-apiserver"]["ports"], (
        "docker-compose.yaml: services.airflow-apiserver.ports"
    )


@pytest.mark.parametrize(
    "key", ["AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"]
)
def test_secret_comes_from_env_and_is_required(key):
    value = COMMON_ENV.get(key, "")
    assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), (
        f"docker-compose.yaml: x-airflow-common.environment.{key} must be ${{VAR:?...}} from .env"
    )


def test_init_runs_the_migrations_and_creates_the_store_pool():
    from huitouke.config import load_settings

    store = load_settings().store
    script = SERVICES["airflow-init"]["command"][-1]
    for step in (
        "airflow db migrate",
        f"airflow pools set {store.pool} ",
        f"huitouke db upgrade --conn {store.conn_id}",
    ):
        assert step in script, (
            f"docker-compose.yaml: services.airflow-init.command does not run `{step.strip()}`"
        )


def test_init_writes_the_admin_password_where_the_auth_manager_reads_it():
    path = COMMON_ENV["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    mounts = [v.split(":")[1] for v in COMMON["volumes"]]
    assert any(path.startswith(target + "/") for target in mounts), (
        f"docker-compose.yaml: the passwords file {path} is on no volume the Airflow services share"
    )
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in SERVICES["airflow-init"]["command"][-1]
    assert SERVICES["airflow-init"]["environment"]["AIRFLOW_ADMIN_PASSWORD"].startswith(
        "${AIRFLOW_ADMIN_PASSWORD:?"
    )


def test_init_password_file_is_what_the_auth_manager_reads(tmp_path, monkeypatch):
    """airflow-init's python line, run as compose would run it; Airflow's SimpleAuthManager then
    finds the admin with the password from .env, quotes and all."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    script = SERVICES["airflow-init"]["command"][-1]
    line = next(line for line in script.splitlines() if "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in line)
    users = COMMON_ENV["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].replace(
        "${AIRFLOW_ADMIN_USERNAME:-admin}", "admin"
    )
    password = 'pa\'ss "word" $HOME'
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", users)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp_path / "passwords.json"))
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", password)
    result = subprocess.run(["bash", "-c", line], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"docker-compose.yaml: services.airflow-init.command: {result.stderr}"
    [admin] = SimpleAuthManager.get_users()
    assert (admin.username, admin.role) == ("admin", "admin")
    assert SimpleAuthManager.get_passwords() == {"admin": password}


# -- Connections and .env ----------------------------------------------------------------------------


@pytest.mark.parametrize("conn_id", _connections_the_code_uses())
def test_connection_the_code_uses_is_set_in_compose(conn_id):
    assert _conn_env(conn_id) in COMMON_ENV, (
        f"docker-compose.yaml: x-airflow-common.environment has no {_conn_env(conn_id)} "
        "(include/huitouke.yaml or a provider's default uses it)"
    )


@pytest.mark.parametrize("conn_id", _connections_the_code_uses())
def test_connection_the_code_uses_is_documented_in_env_example(conn_id):
    read = _variables_read(COMMON_ENV.get(_conn_env(conn_id), ""))
    assert conn_id in ENV_EXAMPLE_TEXT and read <= set(ENV_EXAMPLE), (
        f".env.example: documents no {conn_id} (or lacks {sorted(read - set(ENV_EXAMPLE))}, "
        f"which docker-compose.yaml's {_conn_env(conn_id)} reads)"
    )


@pytest.mark.parametrize("conn_id", _readme_connections())
def test_readme_connection_is_set_in_compose(conn_id):
    assert _conn_env(conn_id) in COMMON_ENV, (
        f"docker-compose.yaml: x-airflow-common.environment has no {_conn_env(conn_id)} (README.md, Connections)"
    )


def test_every_variable_compose_reads_is_in_env_example():
    missing = sorted(_variables_read(COMPOSE_TEXT) - set(ENV_EXAMPLE))
    assert not missing, f".env.example: no line for {missing}, which docker-compose.yaml reads"


def test_every_env_example_variable_has_a_comment():
    lines = ENV_EXAMPLE_TEXT.splitlines()
    bare = [
        line.split("=")[0]
        for i, line in enumerate(lines)
        if re.match(r"[A-Za-z_]\w*=", line) and not (i and lines[i - 1].startswith("#"))
    ]
    assert not bare, f".env.example: {bare} without a comment above"


def test_env_example_leaves_every_required_secret_empty():
    required = set(re.findall(r"(?<!\$)\$\{([A-Z_]+):\?", COMPOSE_TEXT)) - {"AIRFLOW_CONN_SHOP_DB"}
    filled = sorted(name for name in required if ENV_EXAMPLE.get(name))
    assert not filled, f".env.example: {filled} must be empty (a placeholder secret would be used as is)"


@pytest.mark.parametrize("ignore_file", [".gitignore", ".dockerignore"])
def test_env_file_is_ignored(ignore_file):
    lines = (ROOT / ignore_file).read_text(encoding="utf-8").split()
    assert ".env" in lines, f"{ignore_file}: .env (the secrets) is not ignored"


def test_crm_store_has_its_own_user_and_database():
    url = urlsplit(_substituted(COMMON_ENV["AIRFLOW_CONN_CRM_DB"]))
    assert (url.hostname, url.username, url.path) == ("postgres", "huitouke", "/crm"), (
        "docker-compose.yaml: x-airflow-common.environment.AIRFLOW_CONN_CRM_DB must be huitouke@postgres/crm"
    )
    postgres_env = SERVICES["postgres"]["environment"]
    assert _substituted(postgres_env["HUITOUKE_CRM_DB_PASSWORD"]) == url.password, (
        "docker-compose.yaml: services.postgres.environment.HUITOUKE_CRM_DB_PASSWORD differs from AIRFLOW_CONN_CRM_DB's password"
    )
    assert postgres_env["POSTGRES_USER"] == "airflow", (
        "docker-compose.yaml: services.postgres.environment.POSTGRES_USER"
    )


def test_crm_connection_gives_the_store_a_postgresql_url():
    from airflow.sdk import Connection

    from huitouke.store.connection import url_from_connection

    uri = _substituted(COMMON_ENV["AIRFLOW_CONN_CRM_DB"]).replace("<", "").replace(">", "")
    url = url_from_connection(Connection.from_uri(uri, conn_id="crm_db"))
    assert (url.get_backend_name(), url.username, url.host, url.database) == (
        "postgresql",
        "huitouke",
        "postgres",
        "crm",
    )


def test_postgres_runs_the_crm_init_script():
    mounts = SERVICES["postgres"]["volumes"]
    assert "./docker/postgres-init-crm.sh:/docker-entrypoint-initdb.d/10-crm.sh:ro" in mounts, (
        "docker-compose.yaml: services.postgres.volumes does not mount docker/postgres-init-crm.sh"
    )


@pytest.mark.postgres
def test_crm_init_script_creates_the_user_and_database(postgres_server):
    """The script the postgres image runs, run against a real server, with a password no
    hand-quoted SQL would survive."""
    password = 'it\'s "quoted"; DROP ROLE x; --'
    env = {
        **os.environ,
        "PATH": f"{postgres_server.bindir}:{os.environ['PATH']}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres_server.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
        "HUITOUKE_CRM_DB_PASSWORD": password,
    }
    script = ROOT / "docker" / "postgres-init-crm.sh"
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"docker/postgres-init-crm.sh failed: {result.stderr}"
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=postgres_server.port, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'crm'",
            )
            assert cur.fetchone() == ("huitouke",)
            cur.execute("SELECT passwd IS NOT NULL FROM pg_shadow WHERE usename = 'huitouke'")
            assert cur.fetchone() == (True,)
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS crm")
            cur.execute("DROP ROLE IF EXISTS huitouke")
        conn.close()


# -- Dockerfile -------------------------------------------------------------------------------------------


def _image_tag() -> tuple[str, str]:
    match = re.search(
        r"^FROM apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)\s*$", DOCKERFILE, flags=re.MULTILINE
    )
    assert match, "Dockerfile: FROM must be apache/airflow:<version>-python<x.y>"
    return match[1], match[2]


def test_dockerfile_airflow_matches_pyproject():
    pins = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("apache-airflow==")]
    assert pins == [f"apache-airflow=={_image_tag()[0]}"], (
        f"Dockerfile: apache/airflow:{_image_tag()[0]} but pyproject.toml: project.dependencies pins {pins}"
    )


def test_dockerfile_airflow_matches_constraints():
    constraints = (ROOT / "constraints.txt").read_text(encoding="utf-8").split()
    assert f"apache-airflow=={_image_tag()[0]}" in constraints, (
        f"Dockerfile: apache/airflow:{_image_tag()[0]} but constraints.txt pins another apache-airflow"
    )


def test_dockerfile_python_matches_requires_python():
    python = _image_tag()[1]
    requires = PYPROJECT["project"]["requires-python"]
    assert python in SpecifierSet(requires), (
        f"Dockerfile: python{python} but pyproject.toml: requires-python {requires}"
    )
    target = PYPROJECT["tool"]["ruff"]["target-version"]
    assert target == "py" + python.replace(".", ""), (
        f"Dockerfile: python{python} but pyproject.toml: tool.ruff.target-version {target}"
    )


def test_dockerfile_installs_the_production_extras_with_the_constraints():
    install = re.search(r"^RUN pip install (.+)$", DOCKERFILE, flags=re.MULTILINE)
    assert install, "Dockerfile: no `RUN pip install` of the package"
    extras = re.search(r"\[([a-z,]+)\]", install[1])
    assert extras and set(extras[1].split(",")) == {"sms", "celery"}, (
        "Dockerfile: the package's extras must be [sms,celery]"
    )
    assert set(extras[1].split(",")) <= set(PYPROJECT["project"]["optional-dependencies"]), (
        "pyproject.toml: an extra the Dockerfile asks for"
    )
    assert "-c /opt/huitouke/constraints.txt" in install[1], (
        "Dockerfile: pip install without -c constraints.txt"
    )


def test_dockerfile_installs_as_the_airflow_user():
    users = re.findall(r"^USER (\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert users and users[-1] == "airflow", "Dockerfile: the last USER must be airflow"


# -- the native production test runs this file's topology ---------------------------------------


def _scheme(url: str) -> str:
    return urlsplit(url).scheme


def test_the_native_production_test_runs_the_compose_services():
    """tests/test_production.py starts, as processes, exactly the Airflow services compose runs
    (airflow-init's migrations aside, and flower, an optional monitor)."""
    from airflow_server import PRODUCTION_COMPONENTS

    commands = {
        SERVICES[name]["command"] for name in AIRFLOW_SERVICES if name not in ONE_SHOT and name != "flower"
    }
    assert commands == set(PRODUCTION_COMPONENTS), (
        "docker-compose.yaml's Airflow services and tests/airflow_server.py's PRODUCTION_COMPONENTS differ"
    )


def test_the_native_production_test_has_the_compose_settings(tmp_path):
    """The executor, and the kind and driver of every database, broker and store URL, are the
    compose environment's (only the addresses and secrets differ)."""
    from airflow_server import HuitoukeData, production_env

    data = HuitoukeData(tmp_path, crm="postgresql+psycopg2://huitouke@127.0.0.1:5432/crm")
    native = production_env(
        "postgresql+psycopg2://airflow@127.0.0.1:5432/airflow", "redis://127.0.0.1:6379/0", data
    )
    assert native["AIRFLOW__CORE__EXECUTOR"] == COMMON_ENV["AIRFLOW__CORE__EXECUTOR"]
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW_CONN_CRM_DB",
    ):
        compose, ours = _scheme(_substituted(COMMON_ENV[key])), _scheme(native[key])
        assert compose == ours, (
            f"docker-compose.yaml: {key} is {compose}://..., the native test's {ours}://..."
        )
