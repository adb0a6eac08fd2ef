"""Score a cohort: manifest ──▶ one result folder per slide (resumable) ──▶ a cohort table.

Batches get interrupted (wall-time limits, pre-empted nodes, one corrupt slide), so every slide is
its own unit of work: :func:`score_slide` writes ``out_dir/<slide_id>/`` atomically, its
result.json doubles as the completion marker. A re-run skips a slide whose result.json records the
same slide fingerprint, configuration, outline model/annotation sha256, lesion model sha256 (a model
retrained under the same name is a different model), stain, µm/px and patient fields, and
re-scores nothing else unless asked. A failing slide is recorded (one line) in
``batch_status.csv`` and never stops the others.

Work runs where the user's cluster is: a dask ``LocalCluster`` of single-threaded worker processes
by default, any scheduler address, a ``dask_jobqueue.SLURMCluster`` client (see the CLI), or a
plain ``sbatch --array`` (each array task takes its shard ``i::n``); workers open slides by path.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lnpath.analysis.cortex import normalise_stain
from lnpath.batch.cluster import (
    dask_client,
    keep_freed_memory_in_worker,
    local_gpu_workers,
    slurm_task_cpus,
    task_resources,
    worker_device,
)
from lnpath.batch.manifest import (
    manifest_records,
    read_manifest,
    read_result,
    shard_rows,
    validate_manifest,
)
from lnpath.batch.status import check_status, merge_status, status_rows, summarise
from lnpath.core.args import as_path, check_count, check_flag
from lnpath.core.errors import InputError, LnpathError, one_line
from lnpath.core.progress import progress_bar
from lnpath.io.atomic import outside_results
from lnpath.io.configfile import load_config
from lnpath.io.hashing import file_sha256
from lnpath.io.jsonfile import not_a_file
from lnpath.models.store import read_card, resolve_model_path
from lnpath.workflow.options import ScoreOptions
from lnpath.workflow.pipeline import SEGMENTATION_MODEL, lesion_caller, score_slide
from lnpath.wsi.slide import MissingMppError, open_slide
from lnpath.wsi.workers import available_cpus, can_start_workers, use_cpus

LOG = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# completion marker


def lesion_model_id(lesion_model: str | None) -> str | None:
    """What identifies the lesion caller a result was scored with: its sha256, else its name.

    The caller comes from :func:`lnpath.workflow.pipeline.lesion_caller`, the factory scoring uses,
    so the hash is the one result.json records (``models[1].sha256``) whatever kind of model
    the name resolves to, and weights retrained under the same name no longer pass for the old
    ones. Only a caller without a hash (the built-in rules: None) falls back to the name.

    Raises:
        ModelError: the model cannot be found or loaded.
    """

    sha256 = getattr(lesion_caller(lesion_model, device="cpu"), "sha256", None)
    return str(sha256) if sha256 else lesion_model


def expected_inputs(row: Mapping[str, Any], config: Any, lesion_id: str | None) -> dict[str, Any]:
    """What a finished result for this manifest row must record (compared by :func:`stale`).

    Reading the fingerprint opens the slide and hashes the whole file (streamed, a few seconds per
    GB), which is cheap next to scoring and lets a re-run skip finished slides without sending
    them to a worker.

    Args:
        row: one manifest row (see :func:`read_manifest`).
        config: the batch's scoring configuration (anything
            :func:`~lnpath.io.configfile.load_config` takes).
        lesion_id: the batch's lesion model as :func:`lesion_model_id` identifies it.
    """

    with open_slide(row["path"], mpp=row.get("mpp")) as slide:
        fingerprint = slide.fingerprint()
        mpp = slide.mpp
    if row.get("glomeruli"):
        outline_sha = file_sha256(Path(row["glomeruli"]))
    else:
        outline_sha = _segmentation_sha256()
    return {
        "fingerprint": fingerprint["sha256"],
        "config": _canonical(load_config(config).to_dict()),
        "outline_sha256": outline_sha,
        "lesion_model": lesion_id,
        "stain": normalise_stain(row.get("stain") or "PAS"),
        "mpp": mpp,
        "patient_id": row.get("patient_id"),
        "biopsy_date": row.get("biopsy_date"),
    }


def _segmentation_sha256() -> str:
    return str(read_card(resolve_model_path(SEGMENTATION_MODEL))["sha256"])


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def stale(result: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Names of the inputs in which a result.json differs from ``expected`` (empty: complete)."""
    slide = result.get("slide") or {}
    models = result.get("models") or [{}]
    lesion = (models[1] if len(models) > 1 else None) or {}
    found = {
        "fingerprint": (slide.get("fingerprint") or {}).get("sha256"),
        "config": _canonical(result.get("config")),
        "outline_sha256": (models[0] or {}).get("sha256"),
        "lesion_model": lesion.get("sha256") or result.get("lesion_model"),
        "stain": result.get("stain"),
        "mpp": slide.get("mpp"),
        "patient_id": result.get("patient_id"),
        "biopsy_date": result.get("biopsy_date"),
    }
    return [name for name, value in expected.items() if found.get(name) != value]


# --------------------------------------------------------------------------------------------
# scoring


def score_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """Score one manifest row in the current process (a dask worker or the caller).

    Takes plain data (paths and options) so that it pickles to any worker; returns the status
    record instead of raising, so one bad slide never cancels the batch.
    """

    start = time.perf_counter()
    record: dict[str, Any] = {"worker": f"{socket.gethostname()}:{os.getpid()}", "error": None}
    try:
        if not task.get("overwrite") and _already_done(task):
            # a re-run (the worker died after writing, and dask ran the task again): done
            LOG.info("slide %s: its result was already written; not scored again", task["slide_id"])
            record["outcome"] = "scored"
            record["seconds"] = round(time.perf_counter() - start, 1)
            return record
        keep_freed_memory_in_worker()
        cpus = task.get("cpus") or slurm_task_cpus()  # a local worker's share, a SLURM job's
        if cpus:
            import torch  # score_slide imports it anyway

            use_cpus(cpus)
            torch.set_num_threads(available_cpus())
        score_slide(
            task["path"],
            out=task["out"],
            mpp=task.get("mpp"),
            stain=task.get("stain") or "PAS",
            device=worker_device(str(task.get("device", "auto"))),
            config=task.get("config"),
            lesion_model=task.get("lesion_model"),
            patient_id=task.get("patient_id"),
            biopsy_date=task.get("biopsy_date"),
            overwrite=bool(task.get("overwrite")),
            glomeruli=task.get("glomeruli"),
            supersede=bool(task.get("supersede")),
            progress=False,  # one bar for the batch; a worker's own bars would interleave
        )
        record["outcome"] = "scored"
    except MissingMppError as exc:  # a batch has no --mpp: its µm/px is a manifest column
        error = f"{exc.path}: {exc.reason}; give the scanner's value in the manifest's mpp column"
        record.update(outcome="failed", error=one_line(error))
    except LnpathError as exc:
        record.update(outcome="failed", error=one_line(str(exc)))
    except Exception as exc:  # a bug or a broken file: record it, keep the cohort going
        LOG.debug("slide %s failed", task["slide_id"], exc_info=True)
        record.update(outcome="failed", error=one_line(f"{type(exc).__name__}: {exc}"))
    if record["error"]:
        LOG.warning("slide %s failed: %s", task["slide_id"], record["error"])
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def _already_done(task: Mapping[str, Any]) -> bool:
    """Whether the task's folder holds a finished result of exactly the task's inputs."""
    result = read_result(Path(task["out"]))
    if result is None:
        return False
    expected = expected_inputs(task, task.get("config"), lesion_model_id(task.get("lesion_model")))
    return not stale(result, expected)


def score_batch(
    manifest: str | os.PathLike[str] | pd.DataFrame,
    out_dir: str | os.PathLike[str],
    options: ScoreOptions | None = None,
    *,
    client: Any = None,
    shard: tuple[int, int] | None = None,
    workers: int | None = None,
    supersede: bool = False,
    **option_values: Any,
) -> pd.DataFrame:
    """Score every slide of a manifest into ``out_dir/<slide_id>/``, resuming by default.

    Long because it is the batch's plan in order (read, shard, check the configuration once,
    decide each slide, run, record), each step a few lines.

    Args:
        manifest: a manifest CSV path (see :func:`read_manifest`) or an already-read table.
        out_dir: the batch folder; holds one result folder per slide and ``batch_status.csv``.
        options: how to score (:class:`~lnpath.workflow.options.ScoreOptions`, as for
            :func:`lnpath.score_slide`); its fields may also be keywords (``device="cuda"``,
            ``overwrite=True``: re-score slides that already have a result, ...). A manifest
            ``stain`` wins over ``options.stain``; a config path travels to workers as a path.
        client: None (a local cluster of worker processes when more than one slide remains,
            in-process otherwise), a ``dask.distributed.Client`` (e.g. on a SLURMCluster), or
            a scheduler address string.
        shard: ``(i, n)`` scores rows ``i::n`` only, for ``sbatch --array``.
        workers: worker processes of the default local cluster (default: the CPUs this
            process may run on, e.g. its SLURM allocation).
        supersede: with ``overwrite``, move confirmed results aside (see
            :func:`lnpath.score_slide`) instead of failing those slides.

    Returns:
        One row per slide of this shard: ``slide_id, patient_id, timepoint, biopsy_date, path,
        outcome`` (``scored``/``skipped``/``failed``), ``error`` (one line), ``seconds``,
        ``worker`` and ``result`` (its folder). The same rows are merged into
        ``out_dir/batch_status.csv``, each as soon as its slide is done, so an interrupted batch
        keeps the record of what it finished.

    Raises:
        InputError: a malformed manifest, shard, option or configuration (nothing is scored
            then).
    """

    opts = ScoreOptions.build(options, **option_values)
    if workers is not None:
        workers = check_count(workers, "workers")
    supersede = check_flag(supersede, "score_batch: supersede")
    config, lesion_model = opts.config, opts.lesion_model
    if isinstance(manifest, pd.DataFrame):
        table = validate_manifest(manifest, "manifest", Path.cwd())
    else:
        table = read_manifest(manifest)
    table = shard_rows(table, shard)
    out = as_path(out_dir, "out_dir")
    if out.exists() and not out.is_dir():  # mkdir would say only "File exists"
        raise InputError(f"{out}: is a file, not a batch folder")
    outside_results(out, including_itself=True)
    check_status(out)
    load_config(config)  # a bad configuration fails once, here, not once per slide
    if isinstance(client, str):  # reached, or refused, before the batch folder is created
        with dask_client(client, 1) as remote:
            return score_batch(
                manifest,
                out,
                opts,
                client=remote,
                shard=shard,
                workers=workers,
                supersede=supersede,
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the batch folder ({exc.strerror or exc})") from None
    if isinstance(config, (str, os.PathLike)):
        config = os.path.abspath(config)  # workers may start in another folder
    elif config is not None and not isinstance(config, Mapping):
        config = load_config(config).to_dict()  # plain data pickles to any worker
    records: dict[str, dict[str, Any]] = {}
    tasks: list[dict[str, Any]] = []
    # resolved once per batch, and only if some slide already has a result to compare with
    lesion_id = functools.cache(functools.partial(lesion_model_id, lesion_model))
    for row in manifest_records(table):
        base = {k: row[k] for k in ("slide_id", "patient_id", "timepoint", "biopsy_date", "path")}
        folder = out / row["slide_id"]
        base["result"] = str(folder.resolve())
        decision = _plan(row, folder, opts.overwrite, config, lesion_id)
        if decision is not None:
            records[row["slide_id"]] = {**base, "seconds": 0.0, "worker": None, **decision}
            continue
        tasks.append(
            {
                **row,
                "out": str(folder),
                "stain": row.get("stain") or opts.stain,
                "overwrite": folder.exists(),
                "device": opts.device,
                "config": config,
                "lesion_model": lesion_model,
                "supersede": supersede,
                "_base": base,
            }
        )
    skipped = sum(r["outcome"] == "skipped" for r in records.values())
    LOG.info(
        "%d slide(s) to score, %d already done, %d failed to start",
        len(tasks),
        skipped,
        len(records) - skipped,
    )
    if records:
        merge_status(out, status_rows(list(records.values())))
    for task, record in _run(tasks, client, opts.progress, workers):
        records[task["slide_id"]] = {**task["_base"], **record}
        merge_status(out, status_rows([records[task["slide_id"]]]))
    status = status_rows([records[s] for s in table["slide_id"]])
    merge_status(out, status)  # in manifest order
    return status


def _plan(
    row: Mapping[str, Any],
    folder: Path,
    overwrite: bool,
    config: Any,
    lesion_id: Callable[[], str | None],
) -> dict[str, Any] | None:
    """``None`` to score this row, else its final record (skipped, or failed before starting)."""
    if not Path(row["path"]).is_file():  # a folder is named a folder, not "no such file"
        return {"outcome": "failed", "error": str(not_a_file(Path(row["path"]), "slide file"))}
    if row.get("glomeruli") and not Path(row["glomeruli"]).is_file():
        error = not_a_file(Path(row["glomeruli"]), "glomeruli file")
        return {"outcome": "failed", "error": str(error)}
    if overwrite or not folder.exists():
        return None
    result = read_result(folder)
    if result is None:
        return {"outcome": "failed", "error": _unreadable(folder)}
    try:
        changed = stale(result, expected_inputs(row, config, lesion_id()))
    except LnpathError as exc:
        return {"outcome": "failed", "error": one_line(str(exc))}
    if not changed:
        return {"outcome": "skipped", "error": None}
    return {
        "outcome": "failed",
        "error": f"{folder}: holds a result for other inputs ({', '.join(changed)} changed); "
        "use --overwrite to re-score",
    }


def _unreadable(folder: Path) -> str:
    """Why a slide's folder that holds no readable result is not scored, with the way out that
    works (``--overwrite`` refuses a folder of someone else's files, and one whose result.json
    cannot be read unless it is moved aside with ``--supersede``)."""
    if (folder / "result.json").exists():
        return (
            f"{folder}: holds a result.json that cannot be read; --overwrite --supersede moves "
            "it aside and scores anew"
        )
    if folder.is_dir() and not any(folder.iterdir()):
        return f"{folder}: exists and is empty (use --overwrite)"
    return (
        f"{folder}: exists and is not an lnpath result (no result.json), so it is never "
        "replaced; move it away or give the slide another slide_id"
    )


def _run(
    tasks: list[dict[str, Any]], client: Any, progress: bool | None, workers: int | None
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yield ``(task, record)`` as slides finish, on the engine the caller asked for."""
    if not tasks:
        return
    if client is None and (len(tasks) == 1 or not can_start_workers("batch")):
        yield from _sequential(tasks, progress)
        return
    device = str(tasks[0].get("device", "auto"))
    # the CPUs this process may use (a SLURM array task's), not the node's: one slide each
    n_workers = min(workers or available_cpus(), len(tasks))
    if client is None:
        n_workers = local_gpu_workers(device, n_workers)
        # each worker's share of this machine: Dask starts workers with OMP_NUM_THREADS=1, so
        # with fewer workers than CPUs (few slides, --workers, one per GPU) torch would leave
        # CPUs idle, and with as many, each slide would still start reader processes
        share = max(1, available_cpus() // n_workers)
        tasks = [{**task, "cpus": share} for task in tasks]
    with dask_client(client, n_workers, task_resources(device)) as engine:
        yield from _distributed(tasks, engine, progress)


def _sequential(
    tasks: list[dict[str, Any]], progress: bool | None
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    with progress_bar(len(tasks), "slides", "slide", progress) as bar:
        for task in tasks:
            yield task, score_task(_payload(task))
            bar.update()


def _distributed(
    tasks: list[dict[str, Any]], client: Any, progress: bool | None
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    from dask.distributed import as_completed

    futures = {
        client.submit(
            score_task,
            _payload(t),
            key=f"lnpath-score-{t['slide_id']}-{time.time_ns()}",
            pure=False,
            resources=task_resources(str(t.get("device", "auto"))),
        ): t
        for t in tasks
    }
    with progress_bar(len(tasks), "slides", "slide", progress) as bar:
        for future in as_completed(futures):
            task = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # the worker died (memory, node loss): record, go on
                record = {
                    "outcome": "failed",
                    "error": one_line(f"worker lost: {type(exc).__name__}: {exc}"),
                    "seconds": None,
                    "worker": None,
                }
            bar.update()
            yield task, record


def _payload(task: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k != "_base"}


__all__ = [
    "score_batch",
    "score_task",
    "shard_rows",
    "stale",
    "summarise",
]
