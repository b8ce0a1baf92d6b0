"""A Spark standalone cluster for tests: a master and one worker started from the pip-installed pyspark.

Both bind to 127.0.0.1 on free ports. The worker offers 2 cores and two "GPUs", the addresses a fake discovery
script prints, so GPU-aware scheduling works on a machine without GPUs (a task that gets one finds CUDA unusable
and runs on the CPU). Work dir and daemon logs live under the given root; the daemons' process groups (executors
and their Python workers included) are killed when the context exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent
GPU_ADDRESSES = ("0", "1")
WORKER_CORES = 2
WORKER_MEMORY = "4g"
REGISTRATION_TIMEOUT_S = 90


def java_available() -> bool:
    """Whether a JVM is there to run the master and the worker."""
    java_home = os.environ.get("JAVA_HOME")
    return shutil.which("java") is not None or bool(java_home and (Path(java_home) / "bin" / "java").exists())


@dataclass(frozen=True)
class StandaloneCluster:
    """A running master with one registered worker."""

    master_url: str
    webui_url: str
    discovery_script: Path

    def state(self) -> dict:
        """The master's state as its web UI serves it as JSON (workers, active and completed applications)."""
        with urllib.request.urlopen(f"{self.webui_url}/json/", timeout=5) as response:
            return json.load(response)

    def applications(self) -> dict[str, str]:
        """Id → name of every application the master has run or is running."""
        state = self.state()
        return {app["id"]: app["name"] for app in state["activeapps"] + state["completedapps"]}


@contextmanager
def standalone_cluster(root: Path) -> Iterator[StandaloneCluster]:
    """Start a master and a worker under `root`; wait until the worker registered; stop both on exit."""
    (root / "conf").mkdir(parents=True, exist_ok=True)
    (root / "work").mkdir(exist_ok=True)
    script = _write_discovery_script(root)
    port, master_ui, worker_ui = _free_port(), _free_port(), _free_port()
    cluster = StandaloneCluster(master_url=f"spark://127.0.0.1:{port}", webui_url=f"http://127.0.0.1:{master_ui}",
                                discovery_script=script)
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_CONF_DIR": str(root / "conf"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_MASTER_HOST": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    daemons = {
        "master": ([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(port), "--webui-port", str(master_ui)], env),
        "worker": ([spark_class, "org.apache.spark.deploy.worker.Worker", cluster.master_url, "--host", "127.0.0.1",
                    "--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY, "--webui-port", str(worker_ui),
                    "--work-dir", str(root / "work")],
                   {**env, "SPARK_WORKER_OPTS": f"-Dspark.worker.resource.gpu.amount={len(GPU_ADDRESSES)} "
                                                f"-Dspark.worker.resource.gpu.discoveryScript={script}"}),
    }
    with ExitStack() as stack:
        processes, logs = {}, {}
        for name, (command, daemon_env) in daemons.items():
            logs[name] = root / f"{name}.log"
            with logs[name].open("wb") as log_file:
                processes[name] = subprocess.Popen(command, env=daemon_env, stdout=log_file,
                                                   stderr=subprocess.STDOUT, start_new_session=True)
            stack.callback(_stop, processes[name])
        _wait_for_worker(cluster, processes, logs)
        yield cluster


def _wait_for_worker(cluster: StandaloneCluster, processes: dict[str, subprocess.Popen],
                     logs: dict[str, Path]) -> None:
    deadline = time.monotonic() + REGISTRATION_TIMEOUT_S
    while True:
        exited = [name for name, process in processes.items() if process.poll() is not None]
        if exited or time.monotonic() > deadline:
            reason = f"the {' and '.join(exited)} exited" if exited else f"within {REGISTRATION_TIMEOUT_S} s"
            tails = "\n".join(f"{name} log ({path}):\n{tail(path)}" for name, path in logs.items())
            raise RuntimeError(f"no worker registered with {cluster.master_url}: {reason}\n{tails}")
        try:
            workers = cluster.state()["workers"]
        except OSError:
            workers = []
        if any(worker["state"] == "ALIVE" for worker in workers):
            return
        time.sleep(0.5)


def _write_discovery_script(root: Path) -> Path:
    """A GPU discovery script in Spark's format that reports GPU_ADDRESSES on any machine."""
    script = root / "fake_gpu_discovery.sh"
    addresses = json.dumps({"name": "gpu", "addresses": list(GPU_ADDRESSES)})
    script.write_text(f"#!/usr/bin/env bash\necho '{addresses}'\n")
    script.chmod(0o755)
    return script


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file (empty if there is none)."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _stop(process: subprocess.Popen) -> None:
    """Terminate a daemon's process group (its executors and their Python workers too), then kill what is left."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
