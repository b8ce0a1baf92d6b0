"""Run the local Airflow and MLflow services in the background and wait for DAG runs the scheduler executes.

Ports: AIRFLOW_PORT (8080) and MLFLOW_PORT (the port of MLFLOW_UI_URL, 5000), on 127.0.0.1. Pid files go to
$AIRFLOW_HOME/run, logs to $AIRFLOW_HOME/logs/services. Both servers require a login, user `admin`: Airflow's
(SimpleAuthManager) password is in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated, MLflow's (its
basic-auth app) in $AIRFLOW_HOME/mlflow_passwords.json.generated; this script generates both, never prints them,
and keeps them, like every file the services write (logs included), readable by their user only. Jobs load models
with MLflow's pickle deserialization off (MLFLOW_ALLOW_PICKLE_DESERIALIZATION, unless set): the project logs its
models from code.

The same script runs the distributed stack without Docker: with AIRFLOW__DATABASE__SQL_ALCHEMY_CONN on PostgreSQL
(and AIRFLOW__CORE__EXECUTOR=LocalExecutor), MLFLOW_TRACKING_URI the server's URL (the tasks then log through it,
with the admin login, and it serves the artifacts under MLFLOW_ARTIFACT_ROOT), MLFLOW_BACKEND_STORE_URI its
database, and the `spark_default` connection a standalone master.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, urlsplit

import psutil
import requests
from continuous_training.config import PROJECT_ROOT, get_settings

HOST = "127.0.0.1"
ADMIN_USER = "admin"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
COMPONENTS = (*AIRFLOW_COMPONENTS, "mlflow")
HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
STOP_TIMEOUT_S = 30.0
FINAL_STATES = {"success", "failed"}
BIN_DIR = Path(sys.executable).parent
SETTINGS = get_settings()
AIRFLOW_PORT = int(os.environ.get("AIRFLOW_PORT", "8080"))
MLFLOW_PORT = int(os.environ.get("MLFLOW_PORT") or urlsplit(SETTINGS.mlflow_ui_url).port or 5000)
AIRFLOW_URL = f"http://{HOST}:{AIRFLOW_PORT}"
MLFLOW_URL = f"http://{HOST}:{MLFLOW_PORT}"
PASSWORDS_FILE = SETTINGS.airflow_home / "simple_auth_manager_passwords.json.generated"
MLFLOW_PASSWORDS_FILE = SETTINGS.airflow_home / "mlflow_passwords.json.generated"
MLFLOW_AUTH_CONFIG = SETTINGS.airflow_home / "mlflow_basic_auth.ini"
MLFLOW_AUTH_DB = SETTINGS.airflow_home / "mlflow_basic_auth.db"
IDLE_EXECUTOR_WORKER = "airflow worker -- LocalExecutor: <idle>"  # the process title of a waiting worker
PRIVATE_UMASK = 0o077  # files the services write (logs, password files, task logs) are their user's only
PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


def pid_file(name: str) -> Path:
    return SETTINGS.airflow_home / "run" / f"{name}.pid"


def log_file(name: str) -> Path:
    return SETTINGS.airflow_home / "logs" / "services" / f"{name}.log"


def running_pid(name: str) -> int | None:
    """The pid in the component's pid file if that process is alive and still leads its own session."""
    try:
        pid = int(pid_file(name).read_text())
        return pid if os.getsid(pid) == pid else None
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def generated_password(path: Path, user: str) -> str:
    """`user`'s password from a JSON password file readable by its owner only, generated first when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError), os.fdopen(
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        json.dump({user: secrets.token_urlsafe(24)}, file)
    path.chmod(0o600)
    return json.loads(path.read_text())[user]


def child_environment() -> dict[str, str]:
    """The caller's environment plus what ties the services together: address, execution API, login, and the
    MLflow login for tasks when they track to a server."""
    login = {"MLFLOW_TRACKING_USERNAME": ADMIN_USER,
             "MLFLOW_TRACKING_PASSWORD": generated_password(MLFLOW_PASSWORDS_FILE, ADMIN_USER)
             } if tasks_track_to_server() else {}
    return {
        PICKLE_ENV: "false",
        **os.environ,
        **login,
        "AIRFLOW_HOME": str(SETTINGS.airflow_home),
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(AIRFLOW_PORT),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{AIRFLOW_URL}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(PASSWORDS_FILE),
        "MLFLOW_UI_URL": os.environ.get("MLFLOW_UI_URL", MLFLOW_URL),
    }


def command(name: str) -> list[str]:
    """The command line of one component."""
    if name in ("scheduler", "triggerer"):  # their log servers bind every interface; task logs are local files
        return [str(BIN_DIR / "airflow"), name, "--skip-serve-logs"]
    if name in AIRFLOW_COMPONENTS:
        return [str(BIN_DIR / "airflow"), name]
    artifacts = (["--serve-artifacts", "--artifacts-destination", SETTINGS.mlflow_artifact_root.as_uri()]
                 if tasks_track_to_server() else
                 ["--default-artifact-root", SETTINGS.mlflow_artifact_root.as_uri(), "--no-serve-artifacts"])
    return [str(BIN_DIR / "mlflow"), "server", "--app-name", "basic-auth", "--host", HOST, "--port", str(MLFLOW_PORT),
            "--workers", "1", *artifacts,
            "--allowed-hosts", f"{HOST},{HOST}:{MLFLOW_PORT},localhost,localhost:{MLFLOW_PORT}"]


def tasks_track_to_server() -> bool:
    """Whether the tasks log to the MLflow server (MLFLOW_TRACKING_URI is its URL) rather than to its store."""
    return urlsplit(SETTINGS.mlflow_tracking_uri).scheme in ("http", "https")


def backend_store_uri() -> str:
    """The MLflow server's store: MLFLOW_BACKEND_STORE_URI, else the database the tasks track to."""
    if SETTINGS.mlflow_backend_store_uri is not None:
        return SETTINGS.mlflow_backend_store_uri.get_secret_value()
    if tasks_track_to_server():
        raise SystemExit("MLFLOW_TRACKING_URI is the MLflow server's URL: set MLFLOW_BACKEND_STORE_URI to its store")
    return SETTINGS.mlflow_tracking_uri


def mlflow_environment(env: dict[str, str]) -> dict[str, str]:
    """The MLflow server's environment: its store (not on its command line) and its basic-auth app's config, user
    store, admin login and session key. Refuses a user store whose password file is gone (the admin in it keeps
    the old password)."""
    if MLFLOW_AUTH_DB.exists() and not MLFLOW_PASSWORDS_FILE.exists():
        raise SystemExit(f"{MLFLOW_AUTH_DB} exists but {MLFLOW_PASSWORDS_FILE} does not: remove {MLFLOW_AUTH_DB} to "
                         "start MLflow's logins afresh")
    password = generated_password(MLFLOW_PASSWORDS_FILE, ADMIN_USER)
    with os.fdopen(os.open(MLFLOW_AUTH_CONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as config:
        config.write(f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///{MLFLOW_AUTH_DB}\n"
                     f"admin_username = {ADMIN_USER}\n")
    return {**env, "MLFLOW_BACKEND_STORE_URI": backend_store_uri(),
            "MLFLOW_AUTH_CONFIG_PATH": str(MLFLOW_AUTH_CONFIG), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USER,
            "MLFLOW_AUTH_ADMIN_PASSWORD": password, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}


def start(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a component detached in its own session, logging to its log file (its user's only, like all it
    writes), and record its pid."""
    log = log_file(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file(name).parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as output:
        log.chmod(0o600)
        print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} services.py up starts {name} ===", file=output, flush=True)
        process = subprocess.Popen(command(name), stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, start_new_session=True,
                                   umask=PRIVATE_UMASK)
    pid_file(name).write_text(f"{process.pid}\n")
    return process


def unhealthy() -> list[str]:
    """The components that do not pass their health check (yet)."""
    try:
        health = requests.get(f"{AIRFLOW_URL}/api/v2/monitor/health", timeout=5).json()
        waiting = [name for name, key in HEALTH_KEYS.items() if (health.get(key) or {}).get("status") != "healthy"]
    except (requests.RequestException, ValueError):
        waiting = list(AIRFLOW_COMPONENTS)
    try:
        requests.get(f"{MLFLOW_URL}/health", timeout=5).raise_for_status()
    except requests.RequestException:
        waiting.append("mlflow")
    return waiting


def print_log_tail(name: str, lines: int = 40) -> None:
    log = log_file(name)
    tail = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
    print(f"--- last {len(tail)} lines of {log} ---", *tail, sep="\n", file=sys.stderr)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def leftover_group(name: str) -> int | None:
    """The process group of the component's last run when its leader is dead (killed alone, as by a crash) and
    members live on: a killed scheduler leaves its LocalExecutor workers so. None otherwise."""
    try:
        pid = int(pid_file(name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if running_pid(name) is None and group_alive(pid) else None


def kill_leftovers(name: str) -> str | None:
    """SIGKILL what is left of the component's last run (see `leftover_group`); says what it killed."""
    if (group := leftover_group(name)) is None:
        return None
    os.killpg(group, signal.SIGKILL)
    return f"what was left of {name}'s last run (process group {group})"


def kill_idle_executor_workers(name: str) -> str | None:
    """SIGKILL the idle LocalExecutor workers a dead scheduler left (see `leftover_group`); the tasks still running
    in its group go on and report their state to the new scheduler. Says what it killed."""
    if (group := leftover_group(name)) is None:
        return None
    idle = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == group and IDLE_EXECUTOR_WORKER in " ".join(process.info["cmdline"] or []):
                process.kill()
                idle.append(process.pid)
    return f"{len(idle)} idle executor workers of {name}'s last run (process group {group})" if idle else None


def stop(names: Iterable[str]) -> list[str]:
    """SIGTERM each component's process group, SIGKILL what is left after STOP_TIMEOUT_S and what a dead
    component left; remove the pid files."""
    groups: dict[str, int] = {}
    killed = []
    for name in names:
        if pid := running_pid(name):
            os.killpg(pid, signal.SIGTERM)
            groups[name] = pid
        elif leftovers := kill_leftovers(name):
            killed.append(leftovers)
        pid_file(name).unlink(missing_ok=True)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(map(group_alive, groups.values())) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # reaps the children of a failed `up`, which would linger
            os.waitpid(-1, os.WNOHANG)
        time.sleep(0.2)
    for name, pid in groups.items():
        if group_alive(pid):
            print(f"{name} outlived SIGTERM by {STOP_TIMEOUT_S:.0f} s, killing it", file=sys.stderr)
            os.killpg(pid, signal.SIGKILL)
    return [f"{name} (pid {pid})" for name, pid in groups.items()] + killed


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) == 0


def up(timeout: float, names: Iterable[str] = COMPONENTS) -> int:
    """Start the components (of `names`) that are not running and wait until all of them are healthy."""
    names = [name for name in COMPONENTS if name in names]
    running = {name: pid for name in names if (pid := running_pid(name))}
    for name, pid in running.items():
        print(f"{name} is already running (pid {pid})")
    missing = [name for name in names if name not in running]
    servers = {"api-server": AIRFLOW_PORT, "mlflow": MLFLOW_PORT}
    if busy := [str(port) for name, port in servers.items() if name in missing and port_in_use(port)]:
        print(f"port {', '.join(busy)} on {HOST} is taken: set AIRFLOW_PORT / MLFLOW_PORT", file=sys.stderr)
        return 1
    if (store := backend_store_uri()).startswith("sqlite:///"):
        Path(store.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    SETTINGS.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
    generated_password(PASSWORDS_FILE, ADMIN_USER)  # Airflow prints a password it generates: it finds this one
    for name in missing:
        if leftovers := kill_idle_executor_workers(name):
            print(f"killed {leftovers}")
    env = child_environment()
    environments = {name: mlflow_environment(env) if name == "mlflow" else env for name in missing}
    started = {name: start(name, environments[name]) for name in missing}
    for name, process in started.items():
        print(f"started {name} (pid {process.pid}), log: {log_file(name)}")
    began = time.monotonic()
    while True:
        dead = [name for name, process in started.items() if process.poll() is not None]
        waiting = [name for name in unhealthy() if name in names]
        if not dead and not waiting:
            break
        if dead or time.monotonic() - began > timeout:
            print("services failed to start: " + (f"{', '.join(dead)} exited" if dead else
                  f"not healthy after {timeout:.0f} s: {', '.join(waiting)}"), file=sys.stderr)
            for name in dead or waiting:
                print_log_tail(name)
            print(f"stopped {', '.join(stop(started)) or 'nothing'}", file=sys.stderr)
            return 1
        time.sleep(1)
    print(f"healthy after {time.monotonic() - began:.0f} s")
    print(f"Airflow: {AIRFLOW_URL}  (user {ADMIN_USER}, password in {PASSWORDS_FILE})")
    print(f"MLflow:  {MLFLOW_URL}  (user {ADMIN_USER}, password in {MLFLOW_PASSWORDS_FILE})")
    return 0


def task_processes() -> list[psutil.Process]:
    """The processes the services' tasks started (spark-submit and what it runs), which outlive the scheduler: their
    environment names this AIRFLOW_HOME and the task (AIRFLOW_CTX_DAG_ID)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            env = process.environ()
            if env.get("AIRFLOW_HOME") == str(SETTINGS.airflow_home) and "AIRFLOW_CTX_DAG_ID" in env:
                found.append(process)
    return found


def stop_tasks() -> list[str]:
    """SIGTERM what is left of the services' tasks, SIGKILL it after STOP_TIMEOUT_S."""
    processes = task_processes()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=STOP_TIMEOUT_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=STOP_TIMEOUT_S)
    return [f"task process {process.pid}" for process in processes]


def down() -> int:
    stopped = stop(COMPONENTS) + stop_tasks()
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def status(quiet: bool) -> int:
    """Print which components run; exit 0 when all of them do."""
    pids = {name: running_pid(name) for name in COMPONENTS}
    if not quiet:
        for name, pid in pids.items():
            print(f"{name}: running (pid {pid})" if pid else f"{name}: stopped")
    return 0 if all(pids.values()) else 1


class AirflowClient:
    """The Airflow REST API as the admin user, with a JWT from /auth/token (fetched again when refused)."""

    def __init__(self) -> None:
        if not PASSWORDS_FILE.exists():
            raise SystemExit(f"{PASSWORDS_FILE} does not exist: start the services with `up` first")
        self.password = json.loads(PASSWORDS_FILE.read_text())[ADMIN_USER]
        self.session = requests.Session()

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        response = self.session.request(method, f"{AIRFLOW_URL}/api/v2{path}", json=body, timeout=30)
        if response.status_code == 401:
            login = requests.post(f"{AIRFLOW_URL}/auth/token", timeout=30,
                                  json={"username": ADMIN_USER, "password": self.password})
            login.raise_for_status()
            self.session.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
            response = self.session.request(method, f"{AIRFLOW_URL}/api/v2{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()


def wait_run(dag_id: str, run_id: str, timeout: float) -> int:
    """Poll a DAG run until it succeeds (exit 0), fails or the timeout passes (exit 1); unpause its DAG if needed."""
    client = AirflowClient()
    dag_path = f"/dags/{quote(dag_id, safe='')}"
    run_path = f"{dag_path}/dagRuns/{quote(run_id, safe='')}"
    deadline, state = time.monotonic() + timeout, None
    while True:
        try:
            new_state = client.call("GET", run_path)["state"]
        except requests.RequestException as error:  # e.g. a restarting API server: try again
            if error.response is not None and error.response.status_code == 404:
                print(f"{dag_id} has no run {run_id}", file=sys.stderr)
                return 1
            print(f"{dag_id} {run_id}: {error}", file=sys.stderr)
            new_state = state
        if new_state != state:
            print(f"{time.strftime('%H:%M:%S')} {dag_id} {run_id}: {new_state}", flush=True)
            state = new_state
            if state == "queued" and client.call("GET", dag_path)["is_paused"]:  # the scheduler skips paused DAGs
                client.call("PATCH", dag_path, {"is_paused": False})
                print(f"unpaused {dag_id} so that the scheduler starts {run_id}", flush=True)
        if state in FINAL_STATES:
            break
        if time.monotonic() > deadline:
            print(f"{dag_id} {run_id}: still {state or 'unknown'} after {timeout:.0f} s", file=sys.stderr)
            return 1
        time.sleep(2)
    if state == "success":
        return 0
    tasks = client.call("GET", f"{run_path}/taskInstances")["task_instances"]
    failed = sorted(task["task_id"] for task in tasks if task["state"] == "failed")
    print(f"{dag_id} {run_id} failed; failed tasks: {', '.join(failed) or 'none'}", file=sys.stderr)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start the services (those not running) and wait until healthy")
    up_parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for health (180)")
    up_parser.add_argument("--only", nargs="+", choices=COMPONENTS, default=COMPONENTS,
                           help="start only these components")
    commands.add_parser("down", help="stop the processes `up` started")
    status_parser = commands.add_parser("status", help="which components run; exit 0 when all do")
    status_parser.add_argument("--quiet", action="store_true", help="print nothing, only set the exit status")
    wait_parser = commands.add_parser("wait-run", help="wait until a DAG run succeeds (exit 0) or fails (exit 1)")
    wait_parser.add_argument("dag_id")
    wait_parser.add_argument("run_id")
    wait_parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait (3600)")
    args = parser.parse_args()
    if args.command == "up":
        return up(args.timeout, args.only)
    if args.command == "down":
        return down()
    if args.command == "status":
        return status(args.quiet)
    return wait_run(args.dag_id, args.run_id, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
