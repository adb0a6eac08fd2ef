"""Batch scoring over a manifest: the shipped demo slide as two biopsies of one patient.

The demo's own glomerulus outlines are given in the manifest, so each slide skips segmentation and
scores in seconds; the first run goes through ``lnpath batch`` on a real dask LocalCluster of two
worker processes, and every other test reads (or resumes) that batch folder.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import lnpath
from lnpath.batch.manifest import shard_rows
from lnpath.batch.run import expected_inputs, stale
from lnpath.batch.status import read_status
from lnpath.cli import main
from lnpath.core.errors import InputError
from lnpath.io.qupath import read_qupath

HEADER = "slide_id,path,patient_id,timepoint,glomeruli,biopsy_date\n"


@pytest.fixture(scope="module")
def batch(
    repo_dir: Path, demo_followup: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """Score the manifest once through the CLI; the missing slide must not stop the others."""
    root = tmp_path_factory.mktemp("batch")
    (root / "slides").mkdir()
    (root / "slides" / "demo.tiff").symlink_to(repo_dir / "examples" / "demo_biopsy.tiff")
    (root / "slides" / "demo_fu.tiff").symlink_to(demo_followup)
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    manifest = root / "manifest.csv"
    manifest.write_text(
        HEADER
        + f"p1_bl,slides/demo.tiff,P1,0,{outlines},2024-01-02\n"
        + f"p1_fu,slides/demo_fu.tiff,P1,1,{outlines},2024-07-01\n"
        + "p2_bl,slides/missing.svs,P2,0,,\n",
        encoding="utf-8",
    )
    out = root / "out"
    code = main(["batch", str(manifest), "--out", str(out), "--workers", "2", "--device", "cpu"])
    return {"code": code, "manifest": manifest, "out": out, "outlines": outlines}


def test_cli_scores_every_slide_and_records_the_failure(batch: dict) -> None:
    out = batch["out"]
    assert batch["code"] == 1  # a failed slide makes the exit status 1, after the others
    status = read_status(out).set_index("slide_id")
    assert status["outcome"].to_dict() == {"p1_bl": "scored", "p1_fu": "scored", "p2_bl": "failed"}
    error = status.loc["p2_bl", "error"]
    assert "missing.svs" in error and "no such slide file" in error and "\n" not in error
    for slide_id, name in (("p1_bl", "demo.tiff"), ("p1_fu", "demo_fu.tiff")):
        result = json.loads((out / slide_id / "result.json").read_text())
        assert result["patient_id"] == "P1"
        relative = batch["manifest"].parent / "slides" / name  # resolved beside it
        assert status.loc[slide_id, "path"] == str(relative)
        assert result["slide"]["path"] == str(relative.resolve())
        worker = status.loc[slide_id, "worker"]
        assert int(worker.rsplit(":", 1)[1]) != os.getpid()  # scored in a worker process
    assert not (out / "p2_bl").exists()


def test_rerun_resumes_without_rescoring(batch: dict) -> None:
    out = batch["out"]
    before = {s: (out / s / "result.json").stat().st_mtime_ns for s in ("p1_bl", "p1_fu")}
    status = lnpath.score_batch(batch["manifest"], out)
    assert status.set_index("slide_id")["outcome"].to_dict() == {
        "p1_bl": "skipped",
        "p1_fu": "skipped",
        "p2_bl": "failed",
    }
    after = {s: (out / s / "result.json").stat().st_mtime_ns for s in ("p1_bl", "p1_fu")}
    assert after == before


def test_completion_marker_notices_changed_inputs(batch: dict) -> None:
    out = batch["out"]
    row = lnpath.read_manifest(batch["manifest"]).iloc[0].to_dict()
    result = json.loads((out / "p1_bl" / "result.json").read_text())
    assert stale(result, expected_inputs(row, None, None)) == []
    stricter = {"adequacy": {"adequate": 15, "limited": 12}}
    assert stale(result, expected_inputs(row, stricter, None)) == ["config"]
    assert stale(result, expected_inputs({**row, "patient_id": "P9"}, None, None)) == ["patient_id"]
    # a changed manifest row is refused without --overwrite, and the old result is kept
    table = lnpath.read_manifest(batch["manifest"]).iloc[:1].assign(patient_id="P9")
    before = (out / "p1_bl" / "result.json").stat().st_mtime_ns
    status = lnpath.score_batch(table, out)
    assert status.loc[0, "outcome"] == "failed"
    assert (
        "patient_id changed" in status.loc[0, "error"] and "--overwrite" in status.loc[0, "error"]
    )
    assert (out / "p1_bl" / "result.json").stat().st_mtime_ns == before
    lnpath.score_batch(batch["manifest"], out)  # restore the status file for the other tests


def test_overwrite_rescores_in_process(batch: dict) -> None:
    out = batch["out"]
    before = json.loads((out / "p1_bl" / "result.json").read_text())["created_at"]
    mtime = (out / "p1_bl" / "result.json").stat().st_mtime_ns
    status = lnpath.score_batch(batch["manifest"], out, shard=(0, 3), overwrite=True, device="cpu")
    assert status["slide_id"].tolist() == ["p1_bl"]  # shard 0/3 holds the first row only
    assert status.loc[0, "outcome"] == "scored"
    assert int(status.loc[0, "worker"].rsplit(":", 1)[1]) == os.getpid()  # one slide: in-process
    assert (out / "p1_bl" / "result.json").stat().st_mtime_ns > mtime
    assert json.loads((out / "p1_bl" / "result.json").read_text())["created_at"] >= before
    # the other slides keep their last status in the merged batch_status.csv
    assert read_status(out).set_index("slide_id")["outcome"].to_dict() == {
        "p1_bl": "scored",
        "p1_fu": "skipped",
        "p2_bl": "failed",
    }


def test_cohort_table_and_pairs(batch: dict) -> None:
    out = batch["out"]
    assert main(["cohort", str(out)]) == 0
    table = pd.read_csv(out / "cohort.csv").set_index("slide_id")
    parquet = pd.read_parquet(out / "cohort.parquet").set_index("slide_id")
    assert list(parquet.index) == list(table.index) == ["p1_bl", "p1_fu", "p2_bl"]
    n_outlines = len(read_qupath(batch["outlines"]))
    outlines_sha = hashlib.sha256(Path(batch["outlines"]).read_bytes()).hexdigest()
    for slide_id in ("p1_bl", "p1_fu"):
        row = table.loc[slide_id]
        result = lnpath.SlideResult.load(out / slide_id).to_dict()
        assert row["status"] == "provisional"
        assert row["n_glomeruli"] == n_outlines
        assert row["adequacy"] == result["scores"]["adequacy"]["status"]
        ai = result["scores"]["activity_index"]
        assert parquet.loc[slide_id, "ai_complete"] == ai["complete"]
        assert pd.isna(row["ai_total"]) if ai["total"] is None else row["ai_total"] == ai["total"]
        if ai["total_range"] is not None:  # the range an incomplete index can still take
            assert [row["ai_min"], row["ai_max"]] == ai["total_range"]
        assert row["mpp"] == 0.5 and row["mpp_source"] == "tiff-resolution"
        assert row["model_sha256"] == outlines_sha
        assert row["lnpath_version"] == lnpath.__version__
        assert pd.isna(row["warnings"])  # outlines given: no detection warnings
    assert table.loc["p2_bl", "status"] == "failed"
    assert table.loc["p1_fu", "visit"] == 2 and table.loc["p1_fu", "previous_slide_id"] == "p1_bl"
    assert table.loc["p1_bl", "visit"] == 1 and pd.isna(table.loc["p1_bl", "previous_slide_id"])
    pairs = pd.read_csv(out / "cohort_pairs.csv")
    assert len(pairs) == 9  # one pair under every preset; the failed P2 biopsy has no pair
    pair = pairs.set_index("preset").loc["lnhr_default"]
    assert (pair["patient_id"], pair["baseline_slide_id"], pair["followup_slide_id"]) == (
        "P1",
        "p1_bl",
        "p1_fu",
    )
    expected = lnpath.compare(out / "p1_bl", out / "p1_fu", preset="lnhr_default")
    assert pair["status"] == expected.status
    assert pair["endpoint"] == expected.endpoint["name"]


def test_shard_selection_covers_every_row_once() -> None:
    table = pd.DataFrame({"slide_id": [f"s{i}" for i in range(10)]})
    assert list(shard_rows(table, (1, 3))["slide_id"]) == ["s1", "s4", "s7"]
    shards = [list(shard_rows(table, (i, 4))["slide_id"]) for i in range(4)]
    assert sorted(itertools.chain.from_iterable(shards)) == sorted(table["slide_id"])
    assert [len(s) for s in shards] == [3, 3, 2, 2]
    assert list(shard_rows(table, (0, 20))["slide_id"]) == ["s0"]
    assert shard_rows(table, (15, 20)).empty
    for bad in ((3, 3), (-1, 2), (0, 0)):
        with pytest.raises(InputError, match="shard"):
            shard_rows(table, bad)


def test_cli_shard_argument(batch: dict, capsys: pytest.CaptureFixture[str]) -> None:
    # shard 2/3 holds only the missing slide: nothing is scored, the failure is still reported
    code = main(["batch", str(batch["manifest"]), "--out", str(batch["out"]), "--shard", "2/3"])
    assert code == 1
    assert "p2_bl" in capsys.readouterr().out
    for bad in ("3/3", "1", "a/b"):
        with pytest.raises(SystemExit):
            main(["batch", str(batch["manifest"]), "--out", "x", "--shard", bad])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("slide_id,path,patient_id\na,x.svs,P1\n", "missing column(s) timepoint"),
        (HEADER + "a,x.svs,P1,0,,\na,y.svs,P1,1,,\n", "duplicate slide_id 'a'"),
        (HEADER + "../a,x.svs,P1,0,,\n", "not a safe folder name"),
        (HEADER + "a/b,x.svs,P1,0,,\n", "not a safe folder name"),
        ("slide_id,path,patient_id,timepoint,mpp\na,x.svs,P1,0,fast\n", "mpp 'fast'"),
        (HEADER + "a,x.svs,,0,,\nb,y.svs,P1,1,,\n", "empty patient_id on line(s) 2"),
        (HEADER + "a,x.svs,P1\n", "empty timepoint on line(s) 2"),
    ],
)
def test_bad_manifest_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as info:
        lnpath.read_manifest(manifest)
    assert message in str(info.value) and str(manifest) in str(info.value)
    assert main(["batch", str(manifest), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lnpath: error:") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_slurm_without_dask_jobqueue_says_what_to_install(
    batch: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails as if not installed
    code = main(["batch", str(batch["manifest"]), "--out", str(batch["out"]), "--slurm"])
    assert code == 2
    assert "lnpath[cluster]" in capsys.readouterr().err


def test_cohort_refuses_bad_input_without_rewriting_anything(
    batch: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = batch["out"]
    assert main(["cohort", str(out)]) == 0
    pairs = (out / "cohort_pairs.csv").read_text()
    assert main(["cohort", str(out), "--preset", "nope"]) == 2
    assert "unknown response preset 'nope'" in capsys.readouterr().err
    assert (out / "cohort_pairs.csv").read_text() == pairs
    for name, content in (
        ("empty", b""),
        ("binary", b"\xff\xfe\x00a,b"),
        ("columns", b"a,b\n1,2\n"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "batch_status.csv").write_bytes(content)
        assert main(["cohort", str(folder)]) == 2, name
        err = capsys.readouterr().err
        assert "batch_status.csv: unreadable" in err or "malformed (no column" in err, err


def test_malformed_scheduler_address_is_one_line(
    batch: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["batch", str(batch["manifest"]), "--out", str(tmp_path / "b")]
    assert main([*args, "--scheduler", "notaurl"]) == 2
    err = capsys.readouterr().err.strip()
    assert "scheduler notaurl: cannot connect" in err and "tcp://HOST:PORT" in err
    assert "internal error" not in err


def test_cuda_tasks_claim_one_gpu_each_and_cpu_tasks_nothing() -> None:
    """One task per GPU through Dask worker resources; on CPU the annotation is absent, so
    workers started without resources run every task."""
    from lnpath.batch.cluster import dask_client, task_resources, worker_device

    assert task_resources("cuda") == {"GPU": 1} == task_resources("cuda:1")
    assert task_resources("cpu") is None and task_resources("auto") is None
    with dask_client(None, 1, resources=task_resources("cpu")) as client:
        (worker,) = client.scheduler_info()["workers"].values()
        assert not worker.get("resources")
        assert client.submit(worker_device, "cpu", resources=None).result(timeout=120) == "cpu"
    with dask_client(None, 1, resources=task_resources("cuda")) as client:
        ((address, worker),) = client.scheduler_info()["workers"].items()
        assert worker["resources"] == {"GPU": 1}
        future = client.submit(worker_device, "cuda", resources=task_resources("cuda"))
        assert future.result(timeout=120) == "cuda"  # no second GPU here to spread over
        assert client.who_has(future)[future.key] == (address,)


def test_a_local_worker_sizes_its_work_to_its_share_of_the_cpus(tmp_path: Path) -> None:
    """Dask starts each worker with one torch thread (OMP_NUM_THREADS=1) and every CPU in its
    affinity mask: a slide's task sets both to the worker's share of the machine, so one worker
    uses every CPU and two each use their half (no reader processes competing with torch)."""
    import torch

    from lnpath.batch.cluster import dask_client
    from lnpath.batch.run import score_task
    from lnpath.wsi.workers import available_cpus

    cpus = available_cpus()
    task = {"slide_id": "a", "path": str(tmp_path / "missing.svs"), "out": str(tmp_path / "a")}

    def in_worker(client: Any) -> tuple[int, int]:
        threads = client.submit(torch.get_num_threads, pure=False)
        share = client.submit(available_cpus, pure=False)
        return threads.result(timeout=120), share.result(timeout=120)

    with dask_client(None, 1) as client:
        assert in_worker(client) == (1, cpus)  # as Dask starts it
        for share in (cpus, 1):
            record = client.submit(score_task, {**task, "cpus": share}, pure=False)
            assert record.result(timeout=120)["outcome"] == "failed"  # no such slide
            assert in_worker(client) == (share, share)


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the refusal where no GPU exists"
)
def test_batch_on_cuda_without_a_gpu_is_one_line_before_any_cluster(
    repo_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    demo = repo_dir / "examples" / "demo_biopsy.tiff"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(HEADER + f"a,{demo},P1,0,,\nb,{demo},P1,1,,\n", encoding="utf-8")
    out = tmp_path / "out"
    code = main(["batch", str(manifest), "--out", str(out), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "CUDA requested but not available" in err and "\n" not in err
    assert not (out / "a").exists()  # nothing scored


def test_biopsy_dates_are_compared_as_recorded(repo_dir: Path, tmp_path: Path) -> None:
    """A date score_slide stores as YYYY-MM-DD (20240102, a parsed Timestamp) is the same date:
    the cohort must not call the result tampered, nor a re-run call it stale."""
    demo = repo_dir / "examples" / "demo_biopsy.tiff"
    outlines = repo_dir / "examples" / "demo_biopsy_glomeruli.geojson"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(HEADER + f"a,{demo},P1,0,{outlines},20240102\n", encoding="utf-8")
    out = tmp_path / "out"
    assert lnpath.score_batch(manifest, out, device="cpu").loc[0, "outcome"] == "scored"
    assert json.loads((out / "a" / "result.json").read_text())["biopsy_date"] == "2024-01-02"
    assert read_status(out).loc[0, "biopsy_date"] == "2024-01-02"
    cohort = lnpath.cohort_table(out, pairs=False).set_index("slide_id")
    assert (cohort.loc["a", "status"], cohort.loc["a", "integrity"]) == ("provisional", "ok")
    assert lnpath.score_batch(manifest, out).loc[0, "outcome"] == "skipped"
    parsed = pd.read_csv(manifest, parse_dates=["biopsy_date"], date_format="%Y%m%d")
    assert lnpath.score_batch(parsed, out).loc[0, "outcome"] == "skipped"
    status = out / "batch_status.csv"  # as a batch before this fix wrote it
    status.write_text(status.read_text().replace("2024-01-02", "20240102"))
    assert lnpath.cohort_table(out, pairs=False).loc[0, "integrity"] == "ok"


def _demo_manifest() -> pd.DataFrame:
    demo = Path(__file__).resolve().parents[1] / "examples" / "demo_biopsy.tiff"
    return pd.DataFrame(
        {"slide_id": ["a"], "path": [demo], "patient_id": ["P1"], "timepoint": ["baseline"]}
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda out: lnpath.read_manifest(None), "^manifest: expected a file or folder path"),
        (lambda out: lnpath.read_manifest(_demo_manifest()), "got DataFrame"),
        (lambda out: lnpath.score_batch(5, out), "^manifest: expected a file or folder path"),
        (lambda out: lnpath.score_batch(_demo_manifest(), None), "^out_dir: expected"),
        (lambda out: lnpath.score_batch(_demo_manifest(), out, workers="2"), "^workers must be"),
        (lambda out: lnpath.cohort_table(None), "^out_dir: expected a file or folder path"),
    ],
)
def test_batch_arguments_of_the_wrong_kind_are_one_line(
    call: object, message: str, tmp_path: Path
) -> None:
    """None for a path reached pathlib (``TypeError: expected str, bytes or os.PathLike``) and
    text workers a comparison (``'<' not supported``); nothing is scored or written first."""
    with pytest.raises(InputError, match=message):
        call(tmp_path / "out")  # type: ignore[operator]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"jobs": "4"}, r"--slurm-jobs must be >= 1 \(a whole number\), got '4'"),
        ({"cores": 2.5}, r"--slurm-cores must be >= 1"),
        ({"gpus": -1}, r"gpus \(or 0 for none\) must be >= 1"),
    ],
)
def test_slurm_client_refuses_a_setting_of_the_wrong_kind_before_submitting(
    settings: dict[str, object], message: str, tmp_path: Path
) -> None:
    """Text jobs failed in a comparison and gpus=-1 reached dask, which tried sbatch and then
    failed an internal assertion; each is one line now, before any job is submitted."""
    with pytest.raises(InputError, match=message), lnpath.slurm_client(tmp_path, **settings):
        pass  # pragma: no cover - never entered
    assert not any(tmp_path.iterdir())


def test_a_slurm_job_scores_one_slide_at_a_time_on_all_its_cores(tmp_path: Path) -> None:
    """``--slurm-cores 4`` gave the job's one worker 4 Dask threads (up to 4 slides at once in
    its memory, each on one torch thread); now SLURM books the 4 CPUs and the worker runs one
    slide on them (the job script sbatch gets, built by dask-jobqueue without submitting it)."""
    from dask_jobqueue import SLURMCluster

    from lnpath.batch.cluster import slurm_options

    options = slurm_options(tmp_path, None, None, 4, "8GB", "01:00:00", None, 0, None)
    with SLURMCluster(**options) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --cpus-per-task=4" in script
    assert "--nthreads 1 " in script and "--nanny" in script
    options = slurm_options(tmp_path, None, None, 4, "8GB", "01:00:00", None, 2, None)
    with SLURMCluster(**options) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --cpus-per-task=4" in script and "--gres=gpu:2" in script
    assert "--nthreads 2 " in script  # a slide on each GPU at once


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to tell 2 torch threads from 1"
)
def test_a_slurm_jobs_worker_sizes_its_work_to_the_cores_booked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker started inside a SLURM job (its environment holds ``SLURM_CPUS_PER_TASK``, as
    sbatch sets it) and by a nanny (``OMP_NUM_THREADS=1``) ran every slide on one torch thread:
    the task now takes the job's CPUs as its share."""
    import torch

    from lnpath.batch.cluster import dask_client
    from lnpath.batch.run import score_task
    from lnpath.wsi.workers import available_cpus

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")  # inherited by the workers started below
    task = {"slide_id": "a", "path": str(tmp_path / "missing.svs"), "out": str(tmp_path / "a")}
    with dask_client(None, 1) as client:
        assert client.submit(torch.get_num_threads, pure=False).result(timeout=120) == 1
        record = client.submit(score_task, task, pure=False).result(timeout=120)
        assert record["outcome"] == "failed"  # no such slide
        threads = client.submit(torch.get_num_threads, pure=False).result(timeout=120)
        share = client.submit(available_cpus, pure=False).result(timeout=120)
    assert (threads, share) == (2, 2)
