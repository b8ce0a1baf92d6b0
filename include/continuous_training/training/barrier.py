"""Training ranks (Horovod ranks or TensorFlow workers) as the tasks of one Spark barrier stage (gang scheduled:
all start together or none do).

Each task of `rdd.barrier().mapPartitions` becomes one rank. The task of partition 0 hosts Horovod's own gloo
rendezvous server; its port, and a free port of every task (the `peers` a TensorFlow worker cluster is built
from), are shared through `BarrierTaskContext.allGather`, and every task sets the environment contract Horovod's
launchers use before calling the rank function (a PyTorch rank body, or a TensorFlow worker body). If any rank
raises or its Python worker dies, Spark fails the whole stage and kills the other ranks; the driver re-raises the
failing rank's Python traceback, or names the dead worker.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from continuous_training.errors import PipelineError

log = logging.getLogger(__name__)

SLOT_CHECK_INTERVAL = "5s"
SLOT_CHECK_MAX_FAILURES = "6"
_LISTENER_PORTS = range(20000, 32768)
"""Ports for the TensorFlow workers' servers: below Linux's default ephemeral range (32768–60999), from which
outgoing connections take their local ports, so only another listener can take one."""
_WORKER_DIED = "Python worker exited unexpectedly"
_LOCAL_MASTER = re.compile(r"^local(?:\[(\*|\d+)(?:,\s*\d+)?\])?$")
_PYTHON_TRACEBACK = re.compile(
    r"org\.apache\.spark\.api\.python\.PythonException: (Traceback \(most recent call last\):.*?)(?:\n\s+at |\Z)",
    re.DOTALL,
)


@dataclass(frozen=True)
class RankContext:
    """What a rank function learns about its place in the barrier stage."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    host: str
    gpu_addresses: list[str] = field(default_factory=list)
    threads: int = 1
    peers: list[str] = field(default_factory=list)  # "host:port" of every rank, by rank; the port is free here


@dataclass(frozen=True)
class RankResult:
    """What one barrier task sends back to the driver (small and picklable)."""

    rank: int
    size: int
    gpu_addresses: list[str]
    value: Any


class BarrierStageError(RuntimeError):
    """A rank failed, so the barrier stage failed; the message carries the failing rank's Python traceback (None when
    its Python worker died without one)."""

    def __init__(self, message: str, worker_traceback: str | None) -> None:
        super().__init__(message)
        self.worker_traceback = worker_traceback


def barrier_spark_conf(use_gpu: bool, existing: Mapping[str, str] | None = None) -> dict[str, str]:
    """Spark confs a session running barrier training needs; keys already in `existing` are left out.

    Fresh Python workers per task (Horovod and CUDA state never leak between attempts) and a slot check that
    gives up within about 30 s when the cluster cannot run all ranks at once. With `use_gpu` every executor
    and task asks for one GPU (the cluster needs a GPU discovery script; local mode does not schedule GPUs).
    """
    conf = {
        "spark.python.worker.reuse": "false",
        "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": SLOT_CHECK_INTERVAL,
        "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": SLOT_CHECK_MAX_FAILURES,
    }
    if use_gpu:
        conf["spark.executor.resource.gpu.amount"] = "1"
        conf["spark.task.resource.gpu.amount"] = "1"
    existing = existing or {}
    return {key: value for key, value in conf.items() if key not in existing}


def local_master_slots(master: str, task_cpus: int = 1) -> int | None:
    """Concurrent task slots of a `local`, `local[N]`, `local[*]` or `local[N,F]` master; None for others."""
    match = _LOCAL_MASTER.match(master.strip())
    if not match:
        return None
    cores = match.group(1)
    threads = 1 if cores is None else (os.cpu_count() or 1) if cores == "*" else int(cores)
    return threads // max(task_cpus, 1)


def rank_threads(local_slots: int | None, num_proc: int, task_cpus: int) -> int:
    """Intra-op threads of a rank: on a local master its share of the master's cores, on a cluster the cores
    Spark gave its task (spark.task.cpus)."""
    return max(task_cpus, local_slots * task_cpus // num_proc) if local_slots else task_cpus


def run_in_barrier(spark: SparkSession, num_proc: int, rank_fn: Callable[[RankContext], Any], *,
                   use_gpu: bool) -> list[RankResult]:
    """Run `rank_fn` as `num_proc` Horovod ranks in one barrier stage; the results ordered by rank.

    Raises PipelineError when the cluster has fewer task slots than `num_proc`, and BarrierStageError
    (chained to Spark's exception) when a rank raises or its Python worker dies (killed, out of memory, crashed).
    """
    if num_proc < 1:
        raise PipelineError(f"num_proc must be at least 1, got {num_proc}")
    sc = spark.sparkContext
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    slots = local_master_slots(sc.master, task_cpus)
    too_few = f"num_proc={num_proc} needs {num_proc} concurrent task slots; the cluster offers fewer"
    if slots is not None and slots < num_proc:
        raise PipelineError(f"{too_few} (master {sc.master} with spark.task.cpus={task_cpus} gives {slots})")
    if use_gpu and slots is not None:
        log.warning("Spark does not schedule GPUs with master %s: ranks get no GPU addresses", sc.master)
    threads = rank_threads(slots, num_proc, task_cpus)

    def task(_: Any) -> Any:
        yield _run_rank(rank_fn, use_gpu, threads)

    rdd = sc.parallelize(range(num_proc), num_proc).barrier().mapPartitions(task)
    try:
        results = rdd.collect()
    except Exception as error:
        text = str(error)
        if "BarrierJobSlotsNumberCheckFailed" in text:
            raise PipelineError(f"{too_few} (Spark's barrier slot check gave up; add executors or cores, or lower "
                                "num_proc)") from error
        if _WORKER_DIED in text:
            raise BarrierStageError(
                f"a rank's Python worker of the {num_proc}-rank barrier stage died ({_WORKER_DIED}: killed, out of "
                "memory or crashed), so the stage failed", None) from error
        match = _PYTHON_TRACEBACK.search(text)
        if match is None:
            raise
        worker_traceback = match.group(1).rstrip()
        raise BarrierStageError(
            f"a rank of the {num_proc}-rank barrier stage failed, so the stage failed:\n{worker_traceback}",
            worker_traceback,
        ) from error
    return sorted(results, key=lambda result: result.rank)


def _run_rank(rank_fn: Callable[[RankContext], Any], use_gpu: bool, threads: int) -> RankResult:
    """Body of one barrier task: rendezvous, Horovod environment, then the rank function."""
    from horovod.runner.common.util.hosts import HostInfo, get_host_assignments
    from horovod.runner.http.http_server import RendezvousServer
    from pyspark import BarrierTaskContext

    ctx = BarrierTaskContext.get()
    rank = ctx.partitionId()
    hosts = [info.address.rsplit(":", 1)[0] for info in ctx.getTaskInfos()]
    size = len(hosts)
    slots_per_host = Counter(hosts)
    plan = get_host_assignments([HostInfo(host, n) for host, n in slots_per_host.items()], size, size)
    # Ranks are numbered host by host; each task takes the slot of its partition's host in task order.
    by_host = {host: [slot for slot in plan if slot.hostname == host] for host in slots_per_host}
    slot = by_host[hosts[rank]][hosts[:rank].count(hosts[rank])]

    server = None
    port = ""
    if rank == 0:
        server = RendezvousServer()
        port = str(server.start())
        server.init(plan)
    peer = f"{hosts[rank]}:{_free_port(hosts[rank])}"
    # allGather returns only once every task called it, so it is also the start barrier of the ranks.
    gathered = [json.loads(message) for message in ctx.allGather(json.dumps([port, slot.rank, peer]))]
    rendezvous_port = gathered[0][0]
    peers = [entry[2] for entry in sorted(gathered, key=lambda entry: entry[1])]
    resources = ctx.resources()
    gpu_addresses = list(resources["gpu"].addresses) if "gpu" in resources else []
    os.environ.update({
        "HOROVOD_RANK": str(slot.rank),
        "HOROVOD_SIZE": str(slot.size),
        "HOROVOD_LOCAL_RANK": str(slot.local_rank),
        "HOROVOD_LOCAL_SIZE": str(slot.local_size),
        "HOROVOD_CROSS_RANK": str(slot.cross_rank),
        "HOROVOD_CROSS_SIZE": str(slot.cross_size),
        "HOROVOD_HOSTNAME": slot.hostname,
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": hosts[0],
        "HOROVOD_GLOO_RENDEZVOUS_PORT": rendezvous_port,
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "PYTHONUNBUFFERED": "1",
    })
    iface = _interface_of(hosts[rank])
    if iface:
        os.environ["HOROVOD_GLOO_IFACE"] = iface
    if use_gpu and not gpu_addresses:
        log.warning("rank %d asked for a GPU but Spark assigned none: it trains on CPU", slot.rank)
    try:
        value = rank_fn(RankContext(
            rank=slot.rank, size=slot.size, local_rank=slot.local_rank, local_size=slot.local_size,
            host=hosts[rank], gpu_addresses=gpu_addresses, threads=threads, peers=peers,
        ))
        # Rank 0 keeps the rendezvous server up until every rank is done with Horovod.
        ctx.barrier()
    finally:
        if server is not None:
            server.stop()
    return RankResult(rank=slot.rank, size=slot.size, gpu_addresses=gpu_addresses, value=value)


def _free_port(host: str) -> int:
    """A TCP port free on `host` now (the rank body binds it next), drawn from `_LISTENER_PORTS` so that no outgoing
    connection takes it in between; the kernel's choice when none of a sample is free."""
    for port in random.sample(_LISTENER_PORTS, 64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _interface_of(address: str) -> str | None:
    """The network interface that holds `address`, so gloo binds where Spark reached this executor."""
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(entry.address == address for entry in addresses):
            return name
    return None
