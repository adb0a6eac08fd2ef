"""Score a cohort: manifest ──▶ one result folder per slide (resumable) ──▶ a cohort table.

Batches get interrupted (wall-time limits, pre-empted nodes, one corrupt slide), so every slide is
its own unit of work: :func:`score_slide` writes ``out_dir/<slide_id>/`` atomically, and its
result.json doubles as the completion marker. A re-run skips a slide whose result.json records the
same slide fingerprint, configuration, outline model/annotation sha256, lesion model sha256 (a model
retrained under the same name is a different model), stain, µm/px and patient fields, and
re-scores nothing else unless asked. A failing slide is recorded (one line) in
``batch_status.csv`` and never stops the others.

Work runs where the user's cluster is: a dask ``LocalCluster`` of single-threaded worker processes
by default, any scheduler address, or a ``dask_jobqueue.SLURMCluster`` client (see the CLI); or a
plain ``sbatch --array`` where each array task takes its shard ``i::n`` of the manifest. Workers
receive the slide *path*, never an open handle, and open their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ._io import atomic_path
from .errors import InputError, LnpathError

LOG = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("slide_id", "path", "patient_id", "timepoint")
OPTIONAL_COLUMNS = ("mpp", "stain", "biopsy_date", "glomeruli")
STATUS_FILE = "batch_status.csv"
COHORT_FILE = "cohort.csv"
PAIRS_FILE = "cohort_pairs.csv"
STATUS_COLUMNS = (
    "slide_id",
    "patient_id",
    "timepoint",
    "biopsy_date",
    "path",
    "outcome",
    "error",
    "seconds",
    "worker",
    "result",
)
_UNSAFE_ID_CHARS = frozenset("/\\\0")


# --------------------------------------------------------------------------------------------
# manifest


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    Columns ``slide_id, path, patient_id, timepoint`` are required; ``mpp, stain, biopsy_date,
    glomeruli`` (a QuPath GeoJSON of outlines to score instead of segmenting) are optional.
    Relative ``path`` and ``glomeruli`` entries resolve against the manifest's folder, so a
    manifest can travel with its slides. Missing slide files are not an error here: they become
    per-slide failures so that one absent file does not block a cohort.

    Raises:
        InputError: unreadable file, missing column, empty or duplicate ``slide_id``, a
            ``slide_id`` that is not a safe folder name, or a non-numeric ``mpp``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such manifest file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable CSV manifest ({detail})") from None
    return _validate(table, str(path), path.absolute().parent)


def _validate(table: pd.DataFrame, where: str, base: Path) -> pd.DataFrame:
    table = table.rename(columns=lambda c: str(c).strip())
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"{where}: missing column(s) {', '.join(missing)} "
            f"(a manifest needs {', '.join(REQUIRED_COLUMNS)})"
        )
    cols = {c: _column(table, c) for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)}
    for column in REQUIRED_COLUMNS:  # a blank patient would pair unrelated biopsies
        empty = [str(i + 2) for i, v in enumerate(cols[column]) if v is None]
        if empty:
            raise InputError(f"{where}: empty {column} on line(s) {', '.join(empty[:5])}")
    unsafe = [s for s in cols["slide_id"] if _unsafe_id(str(s))]
    if unsafe:
        raise InputError(
            f"{where}: slide_id {unsafe[0]!r} is not a safe folder name "
            "(no path separators, control characters or leading dot)"
        )
    counts = Counter(cols["slide_id"])
    dupes = sorted(s for s, n in counts.items() if n > 1)
    if dupes:
        raise InputError(f"{where}: duplicate slide_id {', '.join(map(repr, dupes[:5]))}")
    cols["path"] = [str(_resolve(p, base)) for p in cols["path"]]
    cols["mpp"] = [_float(v, where, i + 2) for i, v in enumerate(cols["mpp"])]
    cols["stain"] = [v or "PAS" for v in cols["stain"]]
    cols["glomeruli"] = [None if g is None else str(_resolve(g, base)) for g in cols["glomeruli"]]
    return pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in cols.items()})


def _column(table: pd.DataFrame, column: str) -> list[Any]:
    if column not in table.columns:
        return [None] * len(table)
    return [_text(v) for v in table[column]]


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in table.to_dict("records")]


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _unsafe_id(slide_id: str) -> bool:
    return (
        slide_id.startswith(".")
        or any(c in _UNSAFE_ID_CHARS or ord(c) < 32 for c in slide_id)
        or slide_id in {STATUS_FILE, COHORT_FILE, PAIRS_FILE, "cohort.parquet"}
    )


def _resolve(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return Path(os.path.abspath(path if path.is_absolute() else base / path))


def _float(value: str | None, where: str, line: int) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{where}: line {line}: mpp {value!r} is not a number") from None
    if not number > 0:
        raise InputError(f"{where}: line {line}: mpp {value!r} must be positive")
    return number


def shard_rows(table: pd.DataFrame, shard: tuple[int, int] | None) -> pd.DataFrame:
    """Rows ``i::n`` of the manifest, so array task ``i`` of ``n`` takes every n-th slide.

    Striding (not blocks) keeps shards balanced when a manifest is sorted by size or site.

    Raises:
        InputError: ``n < 1`` or ``i`` outside ``0..n-1``.
    """
    if shard is None:
        return table
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise InputError(f"shard {index}/{count}: expected I/N with 0 <= I < N")
    return table.iloc[index::count]


# --------------------------------------------------------------------------------------------
# completion marker


def lesion_model_id(lesion_model: str | None) -> str | None:
    """What identifies the lesion caller a result was scored with: its sha256, else its name.

    The caller comes from :func:`lnpath.pipeline.lesion_caller`, the factory scoring uses, so the
    hash is the one result.json records (``models[1].sha256``) whatever kind of model the name
    resolves to, and weights retrained under the same name no longer pass for the old ones. Only a
    caller without a hash (the built-in rules: None) falls back to the name.

    Raises:
        ModelError: the model cannot be found or loaded.
    """
    from .pipeline import lesion_caller

    sha256 = getattr(lesion_caller(lesion_model, device="cpu"), "sha256", None)
    return str(sha256) if sha256 else lesion_model


def expected_inputs(row: Mapping[str, Any], config: Any, lesion_id: str | None) -> dict[str, Any]:
    """What a finished result for this manifest row must record (compared by :func:`stale`).

    Reading the fingerprint opens the slide (header plus first/last MiB), which is cheap next to
    scoring and lets a re-run skip finished slides without sending them to a worker.

    Args:
        row: one manifest row (see :func:`read_manifest`).
        config: the batch's scoring configuration (anything :func:`~lnpath.config.load_config`
            takes).
        lesion_id: the batch's lesion model as :func:`lesion_model_id` identifies it.
    """
    from .config import load_config
    from .cortex import normalise_stain
    from .result import file_sha256
    from .slide import open_slide

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
    from .model_store import CARD_FILE, resolve_model_path
    from .pipeline import SEGMENTATION_MODEL

    card = resolve_model_path(SEGMENTATION_MODEL) / CARD_FILE
    return str(json.loads(card.read_text(encoding="utf-8"))["sha256"])


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


def _read_result(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------
# scoring


def score_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """Score one manifest row in the current process (a dask worker or the caller).

    Takes plain data (paths and options) so that it pickles to any worker; returns the status
    record instead of raising, so one bad slide never cancels the batch.
    """
    from .pipeline import score_slide

    start = time.perf_counter()
    record: dict[str, Any] = {"worker": f"{socket.gethostname()}:{os.getpid()}", "error": None}
    try:
        score_slide(
            task["path"],
            out=task["out"],
            mpp=task.get("mpp"),
            stain=task.get("stain") or "PAS",
            device=task.get("device", "auto"),
            config=task.get("config"),
            lesion_model=task.get("lesion_model"),
            patient_id=task.get("patient_id"),
            biopsy_date=task.get("biopsy_date"),
            overwrite=bool(task.get("overwrite")),
            glomeruli=task.get("glomeruli"),
        )
        record["outcome"] = "scored"
    except LnpathError as exc:
        record.update(outcome="failed", error=_one_line(str(exc)))
    except Exception as exc:  # a bug or a broken file: record it, keep the cohort going
        LOG.debug("slide %s failed", task["slide_id"], exc_info=True)
        record.update(outcome="failed", error=_one_line(f"{type(exc).__name__}: {exc}"))
    if record["error"]:
        LOG.warning("slide %s failed: %s", task["slide_id"], record["error"])
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


def score_batch(
    manifest: str | os.PathLike[str] | pd.DataFrame,
    out_dir: str | os.PathLike[str],
    client: Any = None,
    shard: tuple[int, int] | None = None,
    overwrite: bool = False,
    device: str = "auto",
    config: Any = None,
    progress: bool = False,
    lesion_model: str | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """Score every slide of a manifest into ``out_dir/<slide_id>/``, resuming by default.

    Args:
        manifest: a manifest CSV path (see :func:`read_manifest`) or an already-read table.
        out_dir: the batch folder; holds one result folder per slide and ``batch_status.csv``.
        client: None (a local cluster of worker processes when more than one slide remains,
            in-process otherwise), a ``dask.distributed.Client`` (e.g. on a SLURMCluster), or
            a scheduler address string.
        shard: ``(i, n)`` scores rows ``i::n`` only, for ``sbatch --array``.
        overwrite: re-score slides that already have a result.
        device: ``auto``, ``cpu`` or ``cuda`` for the networks, in each worker.
        config: a scoring configuration (path, mapping or :class:`~lnpath.config.ScoringConfig`);
            a path travels to the workers as a path.
        progress: show a tqdm bar over finished slides on stderr.
        lesion_model: a trained lesion model name or path; None uses the morphometry rules.
        workers: worker processes of the default local cluster (default: the CPU count).

    Returns:
        One row per slide of this shard: ``slide_id, patient_id, timepoint, biopsy_date, path,
        outcome`` (``scored``/``skipped``/``failed``), ``error`` (one line), ``seconds``,
        ``worker`` and ``result`` (its folder). The same rows are merged into
        ``out_dir/batch_status.csv``.

    Raises:
        InputError: a malformed manifest, shard or configuration (nothing is scored then).
    """
    from .config import load_config

    if isinstance(manifest, pd.DataFrame):
        table = _validate(manifest, "manifest", Path.cwd())
    else:
        table = read_manifest(manifest)
    table = shard_rows(table, shard)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    load_config(config)  # a bad configuration fails once, here, not once per slide
    if isinstance(config, (str, os.PathLike)):
        config = os.path.abspath(config)  # workers may start in another folder
    elif config is not None and not isinstance(config, Mapping):
        config = load_config(config).to_dict()  # plain data pickles to any worker
    records: dict[str, dict[str, Any]] = {}
    tasks: list[dict[str, Any]] = []
    # resolved once per batch, and only if some slide already has a result to compare with
    lesion_id = functools.cache(functools.partial(lesion_model_id, lesion_model))
    for row in _records(table):
        base = {k: row[k] for k in ("slide_id", "patient_id", "timepoint", "biopsy_date", "path")}
        folder = out / row["slide_id"]
        base["result"] = str(folder.resolve())
        decision = _plan(row, folder, overwrite, config, lesion_id)
        if decision is not None:
            records[row["slide_id"]] = {**base, "seconds": 0.0, "worker": None, **decision}
            continue
        tasks.append(
            {
                **row,
                "out": str(folder),
                "overwrite": folder.exists(),
                "device": device,
                "config": config,
                "lesion_model": lesion_model,
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
    for task, record in _run(tasks, client, progress, workers):
        records[task["slide_id"]] = {**task["_base"], **record}
    rows = [records[s] for s in table["slide_id"]]
    status = pd.DataFrame(rows, columns=list(STATUS_COLUMNS)).astype(object)
    status = status.where(status.notna(), None)
    _merge_status(out, status)
    return status


def _plan(
    row: Mapping[str, Any],
    folder: Path,
    overwrite: bool,
    config: Any,
    lesion_id: Callable[[], str | None],
) -> dict[str, Any] | None:
    """``None`` to score this row, else its final record (skipped, or failed before starting)."""
    if not Path(row["path"]).is_file():
        return {"outcome": "failed", "error": f"{row['path']}: no such slide file"}
    if row.get("glomeruli") and not Path(row["glomeruli"]).is_file():
        return {"outcome": "failed", "error": f"{row['glomeruli']}: no such glomeruli file"}
    if overwrite or not folder.exists():
        return None
    result = _read_result(folder)
    if result is None:
        return {
            "outcome": "failed",
            "error": f"{folder}: exists without a readable result.json (use --overwrite)",
        }
    try:
        changed = stale(result, expected_inputs(row, config, lesion_id()))
    except LnpathError as exc:
        return {"outcome": "failed", "error": _one_line(str(exc))}
    if not changed:
        return {"outcome": "skipped", "error": None}
    return {
        "outcome": "failed",
        "error": f"{folder}: holds a result for other inputs ({', '.join(changed)} changed); "
        "use --overwrite to re-score",
    }


def _run(
    tasks: list[dict[str, Any]], client: Any, progress: bool, workers: int | None
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yield ``(task, record)`` as slides finish, on the engine the caller asked for."""
    if not tasks:
        return
    if client is None and len(tasks) == 1:
        yield from _sequential(tasks, progress)
        return
    with _client(client, min(workers or os.cpu_count() or 1, len(tasks))) as dask_client:
        yield from _distributed(tasks, dask_client, progress)


def _sequential(
    tasks: list[dict[str, Any]], progress: bool
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    from tqdm import tqdm

    with tqdm(total=len(tasks), desc="slides", unit="slide", disable=not progress) as bar:
        for task in tasks:
            yield task, score_task(_payload(task))
            bar.update()


def _distributed(
    tasks: list[dict[str, Any]], client: Any, progress: bool
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    from dask.distributed import as_completed
    from tqdm import tqdm

    futures = {
        client.submit(
            score_task,
            _payload(t),
            key=f"lnpath-score-{t['slide_id']}-{time.time_ns()}",
            pure=False,
        ): t
        for t in tasks
    }
    with tqdm(total=len(tasks), desc="slides", unit="slide", disable=not progress) as bar:
        for future in as_completed(futures):
            task = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # the worker died (memory, node loss): record, go on
                record = {
                    "outcome": "failed",
                    "error": _one_line(f"worker lost: {type(exc).__name__}: {exc}"),
                    "seconds": None,
                    "worker": None,
                }
            bar.update()
            yield task, record


def _payload(task: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k != "_base"}


@contextlib.contextmanager
def _client(client: Any, n_workers: int) -> Iterator[Any]:
    from dask.distributed import Client, LocalCluster

    if client is not None and not isinstance(client, str):
        yield client
        return
    if isinstance(client, str):
        try:
            remote = Client(client, timeout="30s")
        except (OSError, ValueError, TypeError) as exc:  # unreachable, or not HOST:PORT
            raise InputError(
                f"scheduler {client}: cannot connect ({_one_line(str(exc))}; expected "
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
def _locked(out: Path) -> Iterator[None]:
    """Serialise status updates from concurrent array tasks writing into one batch folder."""
    with open(out / ".batch_status.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _merge_status(out: Path, status: pd.DataFrame) -> None:
    target = out / STATUS_FILE
    with _locked(out):
        if target.is_file():
            old = pd.read_csv(target, dtype=str, keep_default_na=False)
            order = [
                *old["slide_id"],
                *(s for s in status["slide_id"] if s not in set(old["slide_id"])),
            ]
            old = old[~old["slide_id"].isin(set(status["slide_id"]))]
            merged = pd.concat([old, status.astype(object)], ignore_index=True)
            merged = merged.set_index("slide_id").loc[order].reset_index()  # rows stay in place
        else:
            merged = status
        with atomic_path(target) as tmp:
            merged.to_csv(tmp, index=False)


def read_status(out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The batch folder's ``batch_status.csv``, every column as text (empty = none)."""
    target = Path(out_dir) / STATUS_FILE
    if not target.is_file():
        raise InputError(f"{out_dir}: no {STATUS_FILE} (not a batch folder from `lnpath batch`)")
    try:
        table = pd.read_csv(target, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{target}: unreadable ({type(exc).__name__})") from None
    missing = [c for c in ("slide_id", "outcome") if c not in table.columns]
    if missing:
        raise InputError(f"{target}: malformed (no column {', '.join(missing)})")
    return table.replace({"": None})


# --------------------------------------------------------------------------------------------
# cohort table


def cohort_table(
    out_dir: str | os.PathLike[str], pairs: bool = True, preset: str = "lnhr_default"
) -> pd.DataFrame:
    """One row per slide of a batch folder, with provenance and baseline/follow-up order.

    Writes ``cohort.csv`` and ``cohort.parquet`` (atomically) into ``out_dir``; with ``pairs``,
    also ``cohort_pairs.csv`` from :func:`cohort_pairs`. ``visit`` numbers each patient's slides
    in time order and ``previous_slide_id`` names the biopsy each one is compared against.
    ``ai_total`` counts the assessed components only; ``ai_min``/``ai_max`` (and ``ci_*``) are
    the range the full index can still take, which is what an incomplete index can be compared by.

    Raises:
        InputError: ``out_dir`` holds no readable ``batch_status.csv``, or ``preset`` is unknown.
    """
    from .response_presets import get_preset

    if pairs:
        get_preset(preset)  # an unknown name fails here, before any table is rewritten
    status = read_status(out_dir)
    rows = [_cohort_row(Path(out_dir), r) for r in _records(status)]
    table = pd.DataFrame(rows)
    table["visit"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table["previous_slide_id"] = None
    for _, group in table.groupby("patient_id", sort=False, dropna=False):
        ordered = _in_time_order(group)
        previous = None
        for visit, index in enumerate(ordered.index, start=1):
            table.loc[index, "visit"] = visit
            table.loc[index, "previous_slide_id"] = previous
            if table.loc[index, "status"] != "failed":
                previous = table.loc[index, "slide_id"]
    integer_columns = ("revision", "n_glomeruli", "ai_total", "ai_min", "ai_max")
    for column in (*integer_columns, "ci_total", "ci_min", "ci_max"):
        if column in table.columns:
            table[column] = table[column].astype("Int64")
    _write_table(table, Path(out_dir) / COHORT_FILE)
    if pairs:
        pair_table = cohort_pairs(table, preset=preset)
        with atomic_path(Path(out_dir) / PAIRS_FILE) as tmp:
            pair_table.to_csv(tmp, index=False)
    return table


def _cohort_row(out: Path, status: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "slide_id": status["slide_id"],
        "patient_id": status.get("patient_id"),
        "timepoint": status.get("timepoint"),
        "biopsy_date": status.get("biopsy_date"),
        "status": "failed",
        "error": status.get("error"),
    }
    folder = (out / str(status["slide_id"])).resolve()
    result = _read_result(folder) if status.get("outcome") != "failed" else None
    if result is None:
        return row
    scores = result.get("scores") or {}
    ai = scores.get("activity_index") or {}
    ci = scores.get("chronicity_index") or {}
    adequacy = scores.get("adequacy") or {}
    slide = result.get("slide") or {}
    models = result.get("models") or []
    row.update(
        status=result.get("status"),
        revision=result.get("revision"),
        n_glomeruli=adequacy.get("n_glomeruli"),
        adequacy=adequacy.get("status"),
        ai_total=ai.get("total"),
        ai_complete=ai.get("complete"),
        ai_min=(ai.get("total_range") or [None, None])[0],
        ai_max=(ai.get("total_range") or [None, None])[1],
        ci_total=ci.get("total"),
        ci_complete=ci.get("complete"),
        ci_min=(ci.get("total_range") or [None, None])[0],
        ci_max=(ci.get("total_range") or [None, None])[1],
        isn_rps_class=(scores.get("isn_rps_class") or {}).get("proposal"),
        mpp=slide.get("mpp"),
        mpp_source=slide.get("mpp_source"),
        stain=result.get("stain"),
        outline_source=(models[0] or {}).get("name") if models else None,
        model_sha256=(models[0] or {}).get("sha256") if models else None,
        slide_sha256=(slide.get("fingerprint") or {}).get("sha256"),
        lnpath_version=result.get("lnpath_version"),
        warnings="; ".join(result.get("warnings") or []) or None,
        result=str(folder),
    )
    return row


def _in_time_order(group: pd.DataFrame) -> pd.DataFrame:
    """Numeric timepoints in order, else by biopsy date when all have one, else as listed."""
    numbers = pd.to_numeric(group["timepoint"], errors="coerce")
    if numbers.notna().all():
        return group.assign(_key=numbers).sort_values("_key", kind="stable")
    dates = pd.to_datetime(group["biopsy_date"], errors="coerce")
    if dates.notna().all():
        return group.assign(_key=dates).sort_values("_key", kind="stable")
    return group


def cohort_pairs(cohort: pd.DataFrame, preset: str = "lnhr_default") -> pd.DataFrame:
    """The response endpoint of each patient's consecutive biopsies (baseline → follow-up).

    Each scored slide with a ``previous_slide_id`` is compared with that earlier slide through
    :func:`lnpath.compare`; a pair that cannot be compared keeps its row with the reason.
    """
    from .response import compare

    by_id = cohort.set_index("slide_id")
    rows = []
    for follow in cohort.to_dict("records"):
        base_id = follow.get("previous_slide_id")
        if not base_id or follow["status"] == "failed":
            continue
        record: dict[str, Any] = {
            "patient_id": follow["patient_id"],
            "baseline_slide_id": base_id,
            "followup_slide_id": follow["slide_id"],
            "baseline_timepoint": by_id.loc[base_id, "timepoint"],
            "followup_timepoint": follow["timepoint"],
            "preset": preset,
        }
        try:
            response = compare(by_id.loc[base_id, "result"], follow["result"], preset=preset)
        except LnpathError as exc:
            rows.append({**record, "status": "error", "reasons": _one_line(str(exc))})
            continue
        data = response.to_dict()
        deltas = data["deltas"]
        rows.append(
            {
                **record,
                "status": data["status"],
                "endpoint": data["endpoint"]["name"],
                "endpoint_value": data["endpoint"]["value"],
                "delta_ai": (deltas.get("activity_index") or {}).get("delta"),
                "delta_ci": (deltas.get("chronicity_index") or {}).get("delta"),
                "reasons": "; ".join(data["reasons"]) or None,
            }
        )
    return pd.DataFrame(rows, columns=_PAIR_COLUMNS)


_PAIR_COLUMNS = (
    "patient_id",
    "baseline_slide_id",
    "followup_slide_id",
    "baseline_timepoint",
    "followup_timepoint",
    "preset",
    "status",
    "endpoint",
    "endpoint_value",
    "delta_ai",
    "delta_ci",
    "reasons",
)


def _write_table(table: pd.DataFrame, csv_target: Path) -> None:
    with atomic_path(csv_target) as tmp:
        table.to_csv(tmp, index=False)
    parquet = table.copy()
    for column in parquet.columns:  # object columns hold None plus one type; Parquet needs one
        if parquet[column].dtype == object:
            values = parquet[column].dropna()
            if len(values) and all(isinstance(v, bool) for v in values):
                parquet[column] = parquet[column].astype("boolean")
            else:
                parquet[column] = parquet[column].map(lambda v: None if v is None else str(v))
    with atomic_path(csv_target.with_suffix(".parquet")) as tmp:
        parquet.to_parquet(tmp, index=False)


def summarise(status: pd.DataFrame) -> dict[str, int]:
    """Counts of ``scored``, ``skipped`` and ``failed`` slides in a status table."""
    counts = status["outcome"].value_counts()
    return {k: int(counts.get(k, 0)) for k in ("scored", "skipped", "failed")}


__all__ = [
    "cohort_pairs",
    "cohort_table",
    "read_manifest",
    "read_status",
    "score_batch",
    "score_task",
    "shard_rows",
    "stale",
    "summarise",
]
