"""Where a batch runs: a local Dask cluster, an existing scheduler, or SLURM via dask-jobqueue.

The one place that starts Dask clusters, so that the scheduler's network exposure is decided once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lnpath.core.args import check_count
from lnpath.core.errors import InputError, one_line
from lnpath.core.memory import keep_freed_memory
from lnpath.wsi.workers import quiet_worker

LOG = logging.getLogger(__name__)


GPU = "GPU"
"""The Dask worker resource a slide's task claims when its networks run on CUDA: a worker
started with ``--resources GPU=1`` runs one such task at a time."""


def task_resources(device: str) -> dict[str, float] | None:
    """Dask resources one slide's task needs: one GPU for ``cuda``, none otherwise (CPU workers
    are started without resources and must run every CPU task)."""
    return {GPU: 1} if str(device).startswith("cuda") else None


def local_gpu_workers(device: str, requested: int) -> int:
    """Workers of a local cluster: one per visible GPU for ``cuda`` (so each task has a GPU to
    itself), else ``requested``.

    Raises:
        ModelError: ``cuda`` on a machine where PyTorch sees no GPU (before any cluster starts).
    """
    if task_resources(device) is None:
        return requested
    import torch

    from lnpath.nn.predict import resolve_device

    resolve_device(device)
    return max(1, min(requested, torch.cuda.device_count()))


def worker_device(device: str) -> str:
    """``cuda`` in a worker of lnpath's local cluster (named 0, 1, ...) is that worker's own GPU,
    ``cuda:<name mod GPUs>``; elsewhere (SLURM jobs see only their GPUs) it stays as given."""
    if device != "cuda":
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):  # not inside a dask worker
        return device
    import torch

    count = torch.cuda.device_count()
    return f"cuda:{name % count}" if isinstance(name, int) and count > 1 else device


def keep_freed_memory_in_worker() -> bool:
    """Keep freed memory for reuse in this process, Dask worker or not; whether it now does.

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (its
    ``distributed.nanny.pre-spawn-environ`` default, to hand memory back between tasks), which
    fixes glibc's mmap threshold at 128 KB: each block above it is mapped and unmapped afresh, and
    ``score_slide`` on the demo took 55 s instead of 35 s (8 million page faults, in the main
    thread). That value, in a worker, is overridden; any other ``MALLOC_*_`` setting is the user's
    and stays. A task runs in a worker thread, whose malloc arena grows in 64 MB heaps, so some
    faults remain there: four forward passes of the U-Net in a thread took 2.5 s under the
    nanny's setting, 2.1 s under glibc's default and 1.5-1.8 s with freed memory kept.
    """
    disregard: tuple[str, ...] = ()
    if "distributed" in sys.modules:  # only a worker has it loaded; importing it costs ~0.5 s
        import dask
        from distributed import get_worker

        try:
            get_worker()
        except ValueError:  # the caller's process, not a worker
            pass
        else:
            key = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
            default = dask.config.get(key, None)
            if default is not None and os.environ.get("MALLOC_TRIM_THRESHOLD_") == str(default):
                disregard = ("MALLOC_TRIM_THRESHOLD_",)
    return keep_freed_memory(disregard)


@contextlib.contextmanager
def quiet_dask() -> Iterator[None]:
    """dask's INFO chatter (every worker and connection) kept off the terminal while a cluster
    runs, unless the application itself logs INFO (``lnpath -v``).

    Importing distributed sets its logger to INFO, whatever was set before, so this is entered
    after that import.
    """
    quiet = logging.getLogger("distributed")
    level = quiet.level
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        quiet.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        quiet.setLevel(level)


@contextlib.contextmanager
def dask_client(
    client: Any, n_workers: int, resources: dict[str, float] | None = None
) -> Iterator[Any]:
    """A Dask client: the caller's, one connected to a scheduler address, or a local cluster of
    ``n_workers`` single-threaded processes, each offering ``resources`` (e.g. one GPU)."""
    from dask.distributed import Client, LocalCluster

    if client is not None and not isinstance(client, str):
        yield client
        return
    if isinstance(client, str):
        with quiet_dask():
            try:
                remote = Client(client, timeout="30s")
            except (OSError, ValueError, TypeError) as exc:  # unreachable, or not HOST:PORT
                raise InputError(
                    f"scheduler {client}: cannot connect ({one_line(str(exc))}; expected "
                    "tcp://HOST:PORT)"
                ) from None
            with remote:
                yield remote
        return
    import dask

    LOG.info("starting a local dask cluster with %d worker process(es)", n_workers)
    configured = dask.config.get("distributed.worker.preload", None) or []
    preload = [*([configured] if isinstance(configured, str) else configured), __name__]
    with (
        quiet_dask(),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            scheduler_kwargs={"dashboard": False},
            resources=resources,
            preload=preload,  # dask_setup below, in every worker (restarted ones too)
        ) as cluster,
        Client(cluster) as local,
    ):
        try:
            yield local
        except KeyboardInterrupt:  # workers stopped mid-slide: dask's account of it is noise
            with contextlib.suppress(Exception):
                local.run(_silence_dask)
            _silence_dask()
            raise


def _silence_dask() -> None:
    """Nothing dask logs in this process from now on (run in each worker on Ctrl-C)."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)


def dask_setup(worker: Any) -> None:
    """Dask preload of the local cluster's workers: Ctrl-C belongs to the batch.

    Ctrl-C reaches the whole process group; a worker that took it would stop its event loop
    mid-slide and print dask's tracebacks, while the batch itself stops the cluster, keeps what
    finished and says "interrupted" (:func:`lnpath.wsi.workers.quiet_worker`).
    """
    quiet_worker()


@contextlib.contextmanager
def slurm_client(
    out: str | Path,
    jobs: int = 4,
    queue: str | None = None,
    account: str | None = None,
    cores: int = 1,
    memory: str = "8GB",
    walltime: str = "02:00:00",
    interface: str | None = None,
    gpus: int = 0,
    job_name: str | None = None,
) -> Iterator[Any]:
    """A Dask client whose workers are SLURM jobs (``dask_jobqueue.SLURMCluster``).

    A Dask scheduler has no authentication: whoever reaches its port can run code as the user.
    So it listens on loopback unless ``interface`` names another one (which workers on other
    nodes need), and then a warning says it is exposed. Worker logs go to ``out/slurm-logs``.
    Needs ``lnpath[cluster]``. Each job books ``cores`` CPUs and scores one slide at a time on
    all of them (torch, reading and measurement threads). With ``gpus`` each job asks SLURM for
    that many GPUs (``--gres=gpu:N``) and its worker offers them as the ``GPU`` resource.

    Raises:
        InputError: dask-jobqueue is not installed, or a job setting SLURM would refuse (then
            the batch would wait for workers forever).
    """
    _check_slurm(jobs, cores, memory, walltime)
    if gpus != 0:  # -1 reached dask as an AssertionError after sbatch was tried
        check_count(gpus, "gpus (or 0 for none)")
    ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise InputError(
            "--slurm needs dask-jobqueue: install lnpath[cluster] (pip install 'lnpath[cluster]')"
        ) from None
    finally:  # importing it makes Ctrl-C a silent sys.exit(): exit status 0, batch "succeeded"
        if signal.getsignal(signal.SIGINT) is not ctrl_c and ctrl_c is not None:
            signal.signal(signal.SIGINT, ctrl_c)
    from dask.distributed import Client

    options = slurm_options(out, queue, account, cores, memory, walltime, interface, gpus, job_name)
    with quiet_dask(), SLURMCluster(**options) as cluster:
        cluster.scale(jobs=jobs)
        with Client(cluster) as client:
            yield client


def slurm_options(
    out: str | Path,
    queue: str | None,
    account: str | None,
    cores: int,
    memory: str,
    walltime: str,
    interface: str | None,
    gpus: int,
    job_name: str | None,
) -> dict[str, Any]:
    """``SLURMCluster`` keywords of :func:`slurm_client` (its arguments, checked there)."""
    options: dict[str, Any] = {
        # one slide at a time on all the job's cores (score_task sizes torch, reading and
        # measurement to them): dask-jobqueue's cores=N gave the worker N threads, i.e. up to N
        # slides at once in one process and its memory, each on one torch thread (the nanny
        # starts workers with OMP_NUM_THREADS=1), and cores beyond the slides left stayed idle
        "cores": max(1, gpus),  # with GPUs, one slide per GPU at once
        "job_cpu": cores,
        "processes": 1,
        "memory": memory,
        "walltime": walltime,
        "log_directory": str(Path(out) / "slurm-logs"),
    }
    loopback = loopback_interface()
    if interface and interface != loopback:
        LOG.warning(
            "the dask scheduler listens on %s without authentication: anyone who can reach it "
            "there can run code as you; use --slurm-interface only on a trusted cluster network",
            interface,
        )
    options["interface"] = interface or loopback
    for key, value in (("queue", queue), ("account", account), ("job_name", job_name)):
        if value:
            options[key] = value
    if gpus:
        options["job_extra_directives"] = [f"--gres=gpu:{gpus}"]
        options["worker_extra_args"] = ["--resources", f"{GPU}={gpus}"]
    return options


#: sbatch --time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS
_WALLTIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}")


def slurm_task_cpus() -> int | None:
    """A slide's share of the CPUs SLURM booked for this process's job (``--cpus-per-task``,
    e.g. a :func:`slurm_client` worker's ``cores``, shared by the slides its Dask threads run
    at once), or None outside such a job."""
    value = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if not value.isdigit() or int(value) < 1:
        return None
    try:
        from distributed import get_worker

        threads = int(get_worker().state.nthreads)
    except (ImportError, ValueError):  # not inside a dask worker: the job's CPUs are its own
        threads = 1
    return max(1, int(value) // threads)


def _check_slurm(jobs: int, cores: int, memory: str, walltime: str) -> None:
    from dask.utils import parse_bytes

    for option, value in (("--slurm-jobs", jobs), ("--slurm-cores", cores)):
        check_count(value, option)
    try:
        if parse_bytes(memory) <= 0:
            raise ValueError(memory)
    except (ValueError, TypeError):
        raise InputError(f"--slurm-memory {memory!r}: expected a size such as 8GB") from None
    if not _WALLTIME.fullmatch(walltime):
        raise InputError(f"--slurm-walltime {walltime!r}: expected HH:MM:SS or D-HH:MM:SS")


def loopback_interface() -> str:
    """The name of this machine's loopback interface (``lo`` on Linux, ``lo0`` on macOS/BSD)."""
    import socket

    names = [name for _, name in socket.if_nameindex()]
    return next((n for n in ("lo", "lo0") if n in names), "lo")
