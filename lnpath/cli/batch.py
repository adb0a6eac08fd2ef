"""``lnpath batch MANIFEST --out DIR`` and ``lnpath cohort DIR``: score a cohort, then tabulate it.

``batch`` runs on a local cluster of worker processes by default, on any dask scheduler
(``--scheduler``), on SLURM through dask-jobqueue (``--slurm``), or as one task of a plain
``sbatch --array`` (``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``). It finishes every
slide it can and exits 1 if any failed, so a scheduler sees the failure without losing the rest.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lnpath.cli._rich import escape, new_console, new_table
from lnpath.core.errors import InputError

if TYPE_CHECKING:
    from rich.table import Table


def register(subparsers: Any) -> None:
    """Add ``batch`` and ``cohort``."""
    batch = subparsers.add_parser(
        "batch",
        help="score every slide of a manifest CSV (resumable; local, dask or SLURM)",
        description="Score the slides of a manifest (columns slide_id, path, patient_id, "
        "timepoint; optional mpp, stain, biopsy_date, glomeruli) into DIR/<slide_id>/. "
        "Finished slides are skipped on a re-run; failures are listed in DIR/batch_status.csv "
        "and make the exit status 1 after all other slides are done.",
    )
    batch.add_argument("manifest", type=Path, help="manifest CSV")
    batch.add_argument("--out", type=Path, required=True, help="batch folder")
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler, e.g. tcp://h:8786")
    where.add_argument(
        "--slurm", action="store_true", help="start dask workers as SLURM jobs (lnpath[cluster])"
    )
    batch.add_argument("--slurm-jobs", type=int, default=4, help="SLURM jobs to start (default 4)")
    batch.add_argument("--slurm-queue", help="SLURM partition")
    batch.add_argument("--slurm-account", help="SLURM account")
    batch.add_argument(
        "--slurm-cores",
        type=int,
        default=1,
        help="cores per job, all for the one slide it scores at a time (default 1)",
    )
    batch.add_argument("--slurm-memory", default="8GB", help="memory per job (default 8GB)")
    batch.add_argument("--slurm-walltime", default="02:00:00", help="per job (default 02:00:00)")
    batch.add_argument(
        "--slurm-interface",
        help="network interface the workers reach the scheduler on (default: loopback, for one "
        "node; name the cluster network, e.g. ib0, for workers on other nodes: the scheduler has "
        "no authentication)",
    )
    batch.add_argument("--slurm-job-name", help="SLURM job name of the workers")
    batch.add_argument(
        "--shard", type=_shard, metavar="I/N", help="score only rows I::N (0 <= I < N)"
    )
    batch.add_argument(
        "--workers",
        type=int,
        help="local worker processes (default: the CPUs this process may use)",
    )
    batch.add_argument("--overwrite", action="store_true", help="re-score finished slides")
    batch.add_argument(
        "--supersede",
        action="store_true",
        help="with --overwrite, move confirmed results aside (DIR/<id>.superseded-<time>) "
        "instead of failing those slides",
    )
    batch.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    batch.add_argument("--config", type=Path, help="scoring configuration (YAML or JSON)")
    batch.add_argument("--lesion-model", help="trained lesion model name or path")
    batch.add_argument(
        "--no-tta",
        action="store_true",
        help="segment with one forward pass (segmentation 1.5-2x faster)",
    )
    batch.set_defaults(func=run_batch)

    cohort = subparsers.add_parser(
        "cohort",
        help="one table of a batch folder's results, with baseline/follow-up pairs",
        description="Write DIR/cohort.csv (+ .parquet), DIR/cohort_pairs.csv (each follow-up "
        "against the patient's baseline under every response preset), DIR/cohort_summary.csv "
        "(responder proportion with its exact 95% interval per preset), "
        "DIR/cohort_unpaired.csv and, with --manifest, DIR/cohort_crosstab.csv.",
    )
    cohort.add_argument("batch_dir", type=Path, metavar="DIR", help="batch folder")
    cohort.add_argument(
        "--preset",
        action="append",
        metavar="NAME",
        help="response preset for the pairs (repeatable; default: every preset)",
    )
    cohort.add_argument(
        "--consecutive",
        action="store_true",
        help="pair each biopsy with the one before it instead of the patient's first",
    )
    cohort.add_argument(
        "--manifest",
        type=Path,
        help="the batch manifest; its clinical_response column is cross-tabulated",
    )
    cohort.set_defaults(func=run_cohort)


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    try:
        if not sep:
            raise ValueError
        shard = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N, e.g. 0/4") from None
    if shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 <= I < N")
    return shard


def _summary(status: Any) -> Table:
    table = new_table(title="lnpath batch")
    for column in ("Slide", "Patient", "Timepoint", "Outcome", "Seconds", "Error"):
        table.add_column(column)
    colours = {"scored": "green", "skipped": "cyan", "failed": "red"}
    for row in status.to_dict("records"):
        outcome = row["outcome"]
        table.add_row(
            escape(str(row["slide_id"])),
            escape(str(row["patient_id"] or "")),
            escape(str(row["timepoint"] or "")),
            f"[{colours.get(outcome, 'white')}]{outcome}[/]",
            "" if row["seconds"] is None else f"{row['seconds']:.1f}",
            escape(str(row["error"] or "")),
        )
    return table


def run_batch(args: argparse.Namespace) -> int:
    """``lnpath batch MANIFEST --out DIR``: exit 1 if any slide failed."""
    from lnpath.batch.manifest import read_manifest
    from lnpath.batch.run import score_batch, summarise

    manifest = read_manifest(args.manifest)  # a malformed manifest fails before any cluster
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: expected at least 1")
    with contextlib.ExitStack() as stack:
        client: Any = args.scheduler
        if args.slurm:
            from lnpath.batch.cluster import slurm_client

            client = stack.enter_context(
                slurm_client(
                    args.out,
                    jobs=args.slurm_jobs,
                    queue=args.slurm_queue,
                    account=args.slurm_account,
                    cores=args.slurm_cores,
                    memory=args.slurm_memory,
                    walltime=args.slurm_walltime,
                    interface=args.slurm_interface,
                    gpus=1 if args.device == "cuda" else 0,
                    job_name=args.slurm_job_name,
                )
            )
        status = score_batch(
            manifest,
            args.out,
            client=client,
            shard=args.shard,
            overwrite=args.overwrite,
            device=args.device,
            config=args.config,
            progress=None,  # bars on a terminal only; LNPATH_PROGRESS decides otherwise
            lesion_model=args.lesion_model,
            workers=args.workers,
            supersede=args.supersede,
            tta=False if args.no_tta else None,
        )
    counts = summarise(status)
    console = new_console()
    console.print(_summary(status))
    console.print(
        f"{counts['scored']} scored, {counts['skipped']} already done, {counts['failed']} failed; "
        f"status in {escape(str(args.out / 'batch_status.csv'))}",
        highlight=False,
    )
    return 1 if counts["failed"] else 0


def run_cohort(args: argparse.Namespace) -> int:
    """``lnpath cohort DIR``: write and summarise the cohort tables."""
    from lnpath.batch.cohort import CROSSTAB_FILE, SUMMARY_FILE, UNPAIRED_FILE, cohort_table
    from lnpath.batch.manifest import PAIRS_FILE

    table = cohort_table(
        args.batch_dir,
        preset=args.preset,
        consecutive=args.consecutive,
        manifest=args.manifest,
    )
    failed = int((table["status"] == "failed").sum())
    tampered = int((table["status"] == "tampered").sum())  # no scores: not among the good ones
    written = [PAIRS_FILE, SUMMARY_FILE, UNPAIRED_FILE, *([CROSSTAB_FILE] if args.manifest else [])]
    new_console().print(
        f"{len(table)} slide(s), {failed} failed, "
        + (f"{tampered} tampered (integrity FAILED, no scores), " if tampered else "")
        + f"{table['patient_id'].nunique()} patient(s): "
        f"{escape(str(args.batch_dir / 'cohort.csv'))} (+ .parquet), " + escape(", ".join(written)),
        highlight=False,
    )
    return 0
