"""Render Airflow and MLflow UI pages in headless Chromium: check that they show real content, take screenshots.

`render` drives Debian's Chromium (install it with scripts/install_chromium.sh) over the DevTools protocol: it
sets cookies and localStorage, loads the page, waits until the expected texts are on screen and the page has
settled, and returns the page's visible text (optionally saving a PNG). The Airflow UI takes its login from the
`_token` cookie (a JWT from POST /auth/token), which is what its own login page sets, and picks the grid or
graph view of a DAG from the localStorage key `default_dag_view`. MLflow's basic-auth login goes with every
request of its page as an Authorization header.

    python scripts/ui_pages.py screenshots --out docs   # with the services up (make up)

writes airflow-grid.png, airflow-graph.png and mlflow-run.png of the latest successful `training__churn` run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import requests
from websockets.sync.client import ClientConnection, connect

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-debugging-port=0")
VIEWPORT = (1600, 1000)
SETTLE_S = 1.5  # the page counts as rendered once its text stays the same this long
POLL_S = 0.25
AIRFLOW_TOKEN_COOKIE = "_token"
AIRFLOW_VIEW_KEY = "default_dag_view"
AIRFLOW_GRAPH_SELECTOR = ".react-flow"
AIRFLOW_GRAPH_DIRECTION_KEY = "direction-{dag_id}"  # a top-down graph keeps a long chain of tasks legible
# The MLflow UI's localStorage: the training (not GenAI) workflow, its assistant panel already shown once.
MLFLOW_UI_STATE = {"mlflow.workflowType_v1": json.dumps("machine_learning"),
                   "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}
AIRFLOW_RUN_ID_TAG = "airflow.run_id"
DEFAULT_AIRFLOW_HOME = Path(__file__).resolve().parents[1] / ".airflow"
AIRFLOW_LOGINS_FILE = "simple_auth_manager_passwords.json.generated"
MLFLOW_LOGINS_FILE = "mlflow_passwords.json.generated"  # written by scripts/services.py
ADMIN_USER = "admin"


class PageNotRendered(RuntimeError):
    """A page did not show the expected content in time."""


def airflow_token(airflow_url: str, user: str, password: str) -> str:
    """A JWT for the Airflow API and UI from SimpleAuthManager's POST /auth/token."""
    response = requests.post(f"{airflow_url}/auth/token", json={"username": user, "password": password}, timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


def admin_password(airflow_home: Path | None = None, logins_file: str = AIRFLOW_LOGINS_FILE) -> str:
    """The generated password of the `admin` user of Airflow's SimpleAuthManager (or of MLflow's basic auth)."""
    airflow_home = airflow_home or Path(os.environ.get("AIRFLOW_HOME", DEFAULT_AIRFLOW_HOME))
    return json.loads((airflow_home / logins_file).read_text())[ADMIN_USER]


def basic_auth_header(login: tuple[str, str]) -> dict[str, str]:
    """The Authorization header of a basic-auth login (user, password)."""
    return {"Authorization": "Basic " + base64.b64encode(":".join(login).encode()).decode()}


def airflow_api(airflow_url: str, token: str, path: str) -> dict[str, Any]:
    """GET an Airflow REST API path (under /api/v2) with the token."""
    response = requests.get(f"{airflow_url}/api/v2{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    return response.json()


def latest_successful_run(airflow_url: str, token: str, dag_id: str) -> str:
    """The run id of the DAG's most recent successful run."""
    runs = airflow_api(airflow_url, token, f"/dags/{quote(dag_id, safe='')}/dagRuns?state=success"
                                           "&order_by=-run_after&limit=1")["dag_runs"]
    if not runs:
        raise LookupError(f"{dag_id} has no successful run at {airflow_url}")
    return runs[0]["dag_run_id"]


def task_ids(airflow_url: str, token: str, dag_id: str, run_id: str) -> list[str]:
    """The task ids of one DAG run."""
    path = f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances"
    return sorted({task["task_id"] for task in airflow_api(airflow_url, token, path)["task_instances"]})


def airflow_run_url(airflow_url: str, dag_id: str, run_id: str) -> str:
    """The Airflow UI page of one DAG run; localStorage's AIRFLOW_VIEW_KEY picks its grid or graph view."""
    return f"{airflow_url}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def mlflow_training_run(mlflow_url: str, airflow_run_id: str, login: tuple[str, str]) -> tuple[str, str]:
    """(experiment id, run id) of the MLflow run tagged with the Airflow run id (the first one started)."""
    def post(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{mlflow_url}/api/2.0/mlflow/{endpoint}", json=body, auth=login, timeout=30)
        response.raise_for_status()
        return response.json()

    experiments = post("experiments/search", {"max_results": 1000}).get("experiments", [])
    runs = post("runs/search", {
        "experiment_ids": [experiment["experiment_id"] for experiment in experiments],
        "filter": f"tags.`{AIRFLOW_RUN_ID_TAG}` = '{airflow_run_id}'",
        "order_by": ["attributes.start_time ASC"],
        "max_results": 1,
    }).get("runs", [])
    if not runs:
        raise LookupError(f"no MLflow run at {mlflow_url} is tagged {AIRFLOW_RUN_ID_TAG}={airflow_run_id}")
    return runs[0]["info"]["experiment_id"], runs[0]["info"]["run_id"]


def mlflow_run_url(mlflow_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run."""
    return f"{mlflow_url}/#/experiments/{experiment_id}/runs/{run_id}"


class DevTools:
    """A DevTools protocol session with one page; `call` returns a command's result, skipping events."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        self.websocket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.websocket.recv(timeout=60))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error'].get('message')}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


@contextlib.contextmanager
def chromium_page(viewport: tuple[int, int] = VIEWPORT) -> Iterator[DevTools]:
    """A headless Chromium with a fresh profile (removed afterwards) and a DevTools session with its page."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} does not exist: run scripts/install_chromium.sh as root")
    with tempfile.TemporaryDirectory(prefix="ui-pages-") as profile:
        log_path = Path(profile) / "chromium.log"
        with log_path.open("wb") as log:
            browser = subprocess.Popen([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}/data",
                                        f"--window-size={viewport[0]},{viewport[1]}", "about:blank"],
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        try:
            port = devtools_port(Path(profile) / "data" / "DevToolsActivePort", browser, log_path)
            pages = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page_url = next(target["webSocketDebuggerUrl"] for target in pages if target["type"] == "page")
            with connect(page_url, max_size=None, proxy=None) as websocket:
                page = DevTools(websocket)
                page.call("Emulation.setDeviceMetricsOverride", width=viewport[0], height=viewport[1],
                          deviceScaleFactor=1, mobile=False)
                yield page
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser.pid, signal.SIGTERM)
            try:
                browser.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(browser.pid, signal.SIGKILL)
                browser.wait()


def devtools_port(port_file: Path, browser: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 30) -> int:
    """The DevTools port Chromium chose, from the file it writes into its profile once it listens."""
    deadline = time.monotonic() + timeout_s
    while not (port_file.exists() and port_file.read_text().strip()):
        if browser.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {browser.returncode}" if browser.returncode is not None else "did not start"
            raise RuntimeError(f"Chromium {state}; its log ends:\n{log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    return int(port_file.read_text().split()[0])


def render(url: str, png: Path | None = None, *, cookies: dict[str, str] | None = None,
           headers: dict[str, str] | None = None, local_storage: dict[str, str] | None = None,
           wait_for_text: Sequence[str] = (), within: str = "body",
           timeout_s: float = 60, viewport: tuple[int, int] = VIEWPORT) -> str:
    """Load `url` in headless Chromium and return the visible text of its element `within` (a CSS selector).

    `cookies` are set for the page's origin, `headers` sent with each of its requests and `local_storage` items set
    before the page's scripts run. The page
    counts as rendered when the element shows every text in `wait_for_text` and its text has not changed for
    SETTLE_S; then `png`, if given, gets a screenshot of the viewport. Raises PageNotRendered, naming the
    missing texts, when they do not all show within `timeout_s`.
    """
    text_of_element = f"document.querySelector({json.dumps(within)})?.innerText ?? ''"
    with chromium_page(viewport) as page:
        page.call("Page.enable")
        for name, value in (cookies or {}).items():
            page.call("Network.setCookie", name=name, value=value, url=url, path="/")
        if headers:
            page.call("Network.enable")
            page.call("Network.setExtraHTTPHeaders", headers=headers)
        if local_storage:
            page.call("Page.addScriptToEvaluateOnNewDocument", source="".join(
                f"localStorage.setItem({json.dumps(key)}, {json.dumps(value)});"
                for key, value in local_storage.items()))
        if error := page.call("Page.navigate", url=url).get("errorText"):
            raise PageNotRendered(f"{url} did not load: {error}")
        deadline = time.monotonic() + timeout_s
        text, stable_since = None, time.monotonic()
        while True:
            new_text = page.evaluate(text_of_element)
            if new_text != text:
                text, stable_since = new_text, time.monotonic()
            missing = [expected for expected in wait_for_text if expected not in text]
            if not missing and time.monotonic() - stable_since >= SETTLE_S:
                break
            if time.monotonic() > deadline:
                location = page.evaluate("location.href")
                if missing:
                    raise PageNotRendered(f"{url} (now at {location}) did not show {missing} in {within!r} within "
                                          f"{timeout_s:.0f} s; its text begins: {' '.join(text.split())[:500]!r}")
                break  # the texts are there; a page that keeps changing (a clock, a spinner) is still rendered
            time.sleep(POLL_S)
        if png is not None:
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"]))
        return text


def render_airflow_run(airflow_url: str, token: str, dag_id: str, run_id: str, *,
                       view: Literal["grid", "graph"] = "grid", wait_for_text: Sequence[str] = (),
                       png: Path | None = None, timeout_s: float = 60) -> str:
    """The visible text of the Airflow UI page of one DAG run, logged in with `token`.

    In the grid view that is the whole page (grid, run header, task instances); in the graph view (top-down)
    only the graph, so that `wait_for_text` proves its nodes were drawn.
    """
    local_storage = {AIRFLOW_VIEW_KEY: json.dumps(view),
                     AIRFLOW_GRAPH_DIRECTION_KEY.format(dag_id=dag_id): json.dumps("DOWN")}
    return render(airflow_run_url(airflow_url, dag_id, run_id), png, cookies={AIRFLOW_TOKEN_COOKIE: token},
                  local_storage=local_storage, wait_for_text=wait_for_text,
                  within=AIRFLOW_GRAPH_SELECTOR if view == "graph" else "body", timeout_s=timeout_s)


def render_mlflow_run(mlflow_url: str, experiment_id: str, run_id: str, login: tuple[str, str], *,
                      wait_for_text: Sequence[str] = (), png: Path | None = None, timeout_s: float = 60) -> str:
    """The visible text of the MLflow UI page of one run, as a returning user logged in with `login` sees it
    (training workflow)."""
    return render(mlflow_run_url(mlflow_url, experiment_id, run_id), png, headers=basic_auth_header(login),
                  local_storage=MLFLOW_UI_STATE, wait_for_text=wait_for_text, timeout_s=timeout_s)


def screenshots(airflow_url: str, mlflow_url: str, dag_id: str, run_id: str | None, mlflow_run_id: str | None,
                out: Path, password: str, mlflow_password: str) -> list[Path]:
    """Screenshots of the grid and graph views of a DAG run and of its MLflow training run, into `out`."""
    token = airflow_token(airflow_url, ADMIN_USER, password)
    run_id = run_id or latest_successful_run(airflow_url, token, dag_id)
    tasks = task_ids(airflow_url, token, dag_id, run_id)
    written = []
    for view in ("grid", "graph"):
        written.append(out / f"airflow-{view}.png")
        render_airflow_run(airflow_url, token, dag_id, run_id, view=view, wait_for_text=tasks, png=written[-1])
    login = (ADMIN_USER, mlflow_password)
    if mlflow_run_id is None:
        experiment_id, mlflow_run_id = mlflow_training_run(mlflow_url, run_id, login)
    else:
        response = requests.get(f"{mlflow_url}/api/2.0/mlflow/runs/get", params={"run_id": mlflow_run_id},
                                auth=login, timeout=30)
        response.raise_for_status()
        experiment_id = response.json()["run"]["info"]["experiment_id"]
    written.append(out / "mlflow-run.png")
    render_mlflow_run(mlflow_url, experiment_id, mlflow_run_id, login, wait_for_text=[run_id, "test_auc"],
                      png=written[-1])
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    shots = commands.add_parser("screenshots", help="screenshot a DAG run's grid and graph and its MLflow run")
    shots.add_argument("--airflow-url", default=f"http://127.0.0.1:{os.environ.get('AIRFLOW_PORT', '8080')}")
    shots.add_argument("--mlflow-url", default=os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000"))
    shots.add_argument("--dag-id", default="training__churn")
    shots.add_argument("--run-id", help="the DAG run (default: the latest successful one)")
    shots.add_argument("--mlflow-run-id", help=f"the MLflow run (default: the one tagged {AIRFLOW_RUN_ID_TAG})")
    shots.add_argument("--password", help=f"{ADMIN_USER}'s password (default: $AIRFLOW_HOME/{AIRFLOW_LOGINS_FILE})")
    shots.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    written = screenshots(args.airflow_url.rstrip("/"), args.mlflow_url.rstrip("/"), args.dag_id, args.run_id,
                          args.mlflow_run_id, args.out, args.password or admin_password(),
                          admin_password(logins_file=MLFLOW_LOGINS_FILE))
    for path in written:
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
