"""Where a batch runs: a local Dask cluster, an existing scheduler, or SLURM via dask-jobqueue.

The one place that starts Dask clusters, so that the scheduler's network exposure is decided once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lnpath.core.errors import InputError, one_line

LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(client: Any, n_workers: int) -> Iterator[Any]:
    from dask.distributed import Client, LocalCluster

    if client is not None and not isinstance(client, str):
        yield client
        return
    if isinstance(client, str):
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
    LOG.info("starting a local dask cluster with %d worker process(es)", n_workers)
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))  # the scheduler's INFO chatter is not ours
    try:
        with (
            LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
                scheduler_kwargs={"dashboard": False},
            ) as cluster,
            Client(cluster) as local,
        ):
            yield local
    finally:
        quiet.setLevel(level)


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
) -> Iterator[Any]:
    """A Dask client whose workers are SLURM jobs (``dask_jobqueue.SLURMCluster``).

    Worker logs go to ``out/slurm-logs``. Needs ``lnpath[cluster]``.

    Raises:
        InputError: dask-jobqueue is not installed.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise InputError(
            "--slurm needs dask-jobqueue: install lnpath[cluster] (pip install 'lnpath[cluster]')"
        ) from None
    from dask.distributed import Client

    options: dict[str, Any] = {
        "cores": cores,
        "processes": 1,
        "memory": memory,
        "walltime": walltime,
        "log_directory": str(Path(out) / "slurm-logs"),
    }
    for key, value in (("queue", queue), ("account", account), ("interface", interface)):
        if value:
            options[key] = value
    with SLURMCluster(**options) as cluster:
        cluster.scale(jobs=jobs)
        with Client(cluster) as client:
            yield client
