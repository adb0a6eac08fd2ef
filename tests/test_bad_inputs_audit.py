"""A second sweep of every command with the mistakes a demanding user makes (issue #20).

Each case once printed "internal error", a Python repr (``[Errno 2] ...``, ``'NoneType' ...``,
``{'Sclerotic': ...}``), a misleading hint, did its slow work before refusing the output, or
refused a file another command takes. Now each is one line naming the problem, and nothing is
written.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, file_hashes, lnpath_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO = EXAMPLES / "demo_biopsy.tiff"
OUTLINES = EXAMPLES / "demo_biopsy_glomeruli.geojson"
BOM = b"\xef\xbb\xbf"


def _findings_csv(tmp_path: Path) -> Path:
    """A findings table with every lesion assessed absent, for score-findings."""
    lesions = (
        "endocapillary_hypercellularity,neutrophils_karyorrhexis,fibrinoid_necrosis,"
        "hyaline_deposits,cellular_crescent,fibrocellular_crescent,fibrous_crescent,"
        "global_sclerosis,segmental_sclerosis"
    )
    rows = "".join(f"{i}," + ",".join(["false"] * 9) + "\n" for i in range(1, 13))
    path = tmp_path / "findings.csv"
    path.write_text(f"glomerulus_id,{lesions}\n{rows}")
    return path


# --------------------------------------------------------------------------------------------
# score-findings


def test_score_findings_takes_the_shipped_biopsy_yaml(tmp_path: Path) -> None:
    """score/review --biopsy take YAML; score-findings --biopsy refused the shipped example."""
    proc = lnpath_cli(
        "score-findings", _findings_csv(tmp_path), "--biopsy", EXAMPLES / "demo_biopsy_ifem.yaml"
    )
    assert proc.returncode == 0, proc.stderr
    score = json.loads(proc.stdout)
    assert score["biopsy"]["membranous"] is True
    assert "V" in score["isn_rps_class"]["label"]


def test_score_findings_biopsy_typo_is_named(tmp_path: Path) -> None:
    biopsy = tmp_path / "ifem.yaml"
    biopsy.write_text("membranus: true\n")
    proc = lnpath_cli("score-findings", _findings_csv(tmp_path), "--biopsy", biopsy)
    assert_one_line_error(proc, str(biopsy), "membranus")


@pytest.mark.parametrize("geometry", ["null", None], ids=["null", "absent"])
def test_a_feature_without_geometry(geometry: str | None, tmp_path: Path) -> None:
    """It said "invalid geometry ('NoneType' object has no attribute 'get')"; a file of nothing
    but such features holds no outline, and says so."""
    feature: dict[str, object] = {"type": "Feature", "properties": {"objectType": "annotation"}}
    if geometry is not None:
        feature["geometry"] = None
    path = tmp_path / "outlines.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    line = assert_one_line_error(
        lnpath_cli("score-findings", path),
        "none of its 1 feature(s) is an area outline",
        "no geometry",
    )
    assert "NoneType" not in line


def test_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """A CSV with a UTF-8 BOM was read, the same GeoJSON or cortex JSON "not valid JSON"."""
    outlines = tmp_path / "bom.geojson"
    outlines.write_bytes(BOM + OUTLINES.read_bytes())
    cortex = tmp_path / "cortex.json"
    cortex.write_bytes(BOM + json.dumps({"interstitial_fibrosis": 0.3}).encode())
    config = tmp_path / "config.json"
    config.write_bytes(BOM + b'{"class_iv_threshold": 0.6}')
    proc = lnpath_cli("score-findings", outlines, "--cortex", cortex, "--config", config)
    assert proc.returncode == 0, proc.stderr
    score = json.loads(proc.stdout)
    assert score["cortex"]["interstitial_fibrosis"] == 0.3
    assert score["config"]["class_iv_threshold"] == 0.6


def test_tiles_help_shows_one_percent_sign() -> None:
    proc = lnpath_cli("tiles", "--help")
    assert proc.returncode == 0
    assert "5 %," in proc.stdout and "%%" not in proc.stdout


# --------------------------------------------------------------------------------------------
# score


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--date", "2026-13-40", "2026-13-40 is not a calendar date"),
        ("--config", "missing.yaml", "no such configuration file"),
        ("--biopsy", "missing.yaml", "no such biopsy findings file"),
        ("--glomeruli", "missing.geojson", "missing.geojson"),
        ("slide", "not-a-slide.tiff", "cannot open"),
    ],
)
def test_a_score_that_fails_leaves_nothing_behind(
    option: str, value: str, needle: str, tmp_path: Path
) -> None:
    """The lock file and the folders above the result were made before any input was read."""
    (tmp_path / "not-a-slide.tiff").write_text("not a slide")
    out = tmp_path / "new" / "folders" / "r"
    slide, args = (value, []) if option == "slide" else (DEMO, [option, value])
    proc = lnpath_cli("score", slide, "--out", out, *args, cwd=tmp_path)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "new").exists()


def test_a_failed_rescore_leaves_the_result_folder_as_it_was(
    demo_result_template: Path, copy_result: Callable[[Path], Path]
) -> None:
    result = copy_result(demo_result_template)
    before, beside = file_hashes(result), sorted(p.name for p in result.parent.iterdir())
    missing = result.parent / "missing.yaml"
    proc = lnpath_cli("score", DEMO, "--out", result, "--overwrite", "--biopsy", missing)
    assert_one_line_error(proc, "no such biopsy findings file")
    assert file_hashes(result) == before
    assert sorted(p.name for p in result.parent.iterdir()) == beside  # no lock file either


def test_a_biopsy_date_that_does_not_exist_is_named_so(
    demo_result_template: Path, tmp_path: Path
) -> None:
    """2026-02-30 was "expected an ISO date YYYY-MM-DD", which it is, in form."""
    import lnpath

    baseline = json.loads((demo_result_template / "result.json").read_text())
    with pytest.raises(lnpath.InputError, match="biopsy_date 2026-02-30 is not a calendar date"):
        lnpath.compare({**baseline, "biopsy_date": "2026-02-30"}, baseline)
    proc = lnpath_cli("score", DEMO, "--out", tmp_path / "r", "--date", "5/3")
    assert_one_line_error(proc, "biopsy date '5/3' is not an ISO date (YYYY-MM-DD)")


@pytest.mark.parametrize("suffix", [".csv", ".txt"])
def test_segment_refuses_a_file_it_would_misname(suffix: str, tmp_path: Path) -> None:
    """``--out x.csv`` wrote GeoJSON into a .csv file."""
    out = tmp_path / f"outlines{suffix}"
    proc = lnpath_cli("segment", DEMO, "--out", out, "--no-progress")
    assert_one_line_error(proc, f"QuPath GeoJSON, not {suffix}", ".geojson")
    assert not out.exists()


def test_a_cortex_file_with_an_unknown_key(tmp_path: Path) -> None:
    """A misspelt component was only warned about, and then scored as not assessed."""
    cortex = tmp_path / "cortex.json"
    cortex.write_text(json.dumps({"interstitial_fibrosis": 0.3, "tubular_atrophie": 0.2}))
    proc = lnpath_cli("score-findings", _findings_csv(tmp_path), "--cortex", cortex)
    assert_one_line_error(proc, str(cortex), "tubular_atrophie", "known:", "tubular_atrophy")


def test_lnpath_score_slide_is_the_score_command(tmp_path: Path) -> None:
    """The README's command typed after ``lnpath`` was "invalid choice: 'score_slide'"."""
    for name in ("score_slide", "score-slide"):
        proc = lnpath_cli(name, tmp_path / "missing.svs")
        assert "invalid choice" not in proc.stderr
        assert_one_line_error(proc, "missing.svs")


def test_a_cortex_path_that_is_no_regular_file(tmp_path: Path) -> None:
    """/dev/null was called "no such cortex file", sending the user looking for a typo."""
    proc = lnpath_cli("score-findings", _findings_csv(tmp_path), "--cortex", "/dev/null")
    assert_one_line_error(proc, "/dev/null", "not a regular file", "cortex file")


def test_a_cortex_exported_from_a_result_is_read(
    demo_result_template: Path, tmp_path: Path
) -> None:
    """result.json's ``cortex`` (a CortexMeasurement export) scores as the fractions it holds."""
    exported = json.loads((demo_result_template / "result.json").read_text())["cortex"]
    cortex = tmp_path / "cortex.json"
    cortex.write_text(json.dumps(exported))
    proc = lnpath_cli("score-findings", _findings_csv(tmp_path), "--cortex", cortex)
    assert proc.returncode == 0, proc.stderr
    assert "unknown cortex key" not in proc.stderr


# --------------------------------------------------------------------------------------------
# devices


@pytest.mark.parametrize("device", ["mps", "meta"])
def test_a_device_torch_knows_but_lnpath_does_not(device: str, tmp_path: Path) -> None:
    """torch.device("mps") parses, then failed deep inside: "internal error: RuntimeError"."""
    out = tmp_path / "outlines.geojson"
    proc = lnpath_cli("segment", DEMO, "--out", out, "--device", device, "--no-progress")
    assert_one_line_error(proc, f"unknown device '{device}'", "auto, cpu or cuda")
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# review, confirm, verify, keygen


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("missing.csv", "no such findings file"),
        ("a-folder.csv", "is a folder"),
        ("outlines.geojson", "--geojson"),
    ],
)
def test_review_findings_that_are_no_table(
    name: str,
    needle: str,
    demo_result_template: Path,
    copy_result: Callable[[Path], Path],
    tmp_path: Path,
) -> None:
    """A missing file said "cannot read findings table ([Errno 2] No such file ...)"."""
    result = copy_result(demo_result_template)
    before = file_hashes(result)
    path = tmp_path / name
    if name.endswith(".geojson"):
        shutil.copy(OUTLINES, path)
    elif name.startswith("a-folder"):
        path.mkdir()
    proc = lnpath_cli("review", result, "--findings", path, "--pathologist", "Dr R")
    line = assert_one_line_error(proc, str(path), needle)
    assert "Errno" not in line
    assert file_hashes(result) == before


def test_review_findings_with_an_empty_id_names_it(
    demo_result_template: Path, copy_result: Callable[[Path], Path], tmp_path: Path
) -> None:
    """It said "feature_id ... is glomerulus 1, not  (rows shifted while editing?)"."""
    result = copy_result(demo_result_template)
    lines = (result / "findings.csv").read_text().splitlines()
    lines[1] = "," + lines[1].split(",", 1)[1]  # the glomerulus_id of row 1 emptied
    edited = tmp_path / "edited.csv"
    edited.write_text("\n".join(lines) + "\n")
    proc = lnpath_cli("review", result, "--findings", edited, "--pathologist", "Dr R")
    assert_one_line_error(proc, "glomerulus_id is empty")


def test_key_files_that_are_not_there(
    confirmed_template: Path, demo_result_template: Path, tmp_path: Path
) -> None:
    """Both said "not a readable ... key ([Errno 2] No such file or directory: ...)"."""
    result = tmp_path / "r"
    shutil.copytree(demo_result_template, result, symlinks=True)
    before = file_hashes(result)
    missing = tmp_path / "dr_renal.pem"
    proc = lnpath_cli("confirm", result, "--pathologist", "Dr A", "--key", missing)
    assert "Errno" not in assert_one_line_error(proc, str(missing), "no such private key file")
    assert file_hashes(result) == before
    proc = lnpath_cli("verify", confirmed_template, "--public-key", tmp_path)
    assert_one_line_error(proc, str(tmp_path), "is a folder, not a public key file")


def test_outputs_inside_a_result_folder_are_refused(
    demo_result_template: Path, copy_result: Callable[[Path], Path]
) -> None:
    """``segment --out R/glomeruli.geojson --overwrite`` replaced a sealed file of the result
    (verify then failed), and a key or tile folder could be written among its files."""
    result = copy_result(demo_result_template)
    before = file_hashes(result)
    sealed = result / "glomeruli.geojson"
    proc = lnpath_cli("segment", DEMO, "--out", sealed, "--overwrite", "--no-progress")
    assert_one_line_error(proc, "inside the result folder", "choose a path outside it")
    proc = lnpath_cli("keygen", "--out", result / "dr_renal")
    assert_one_line_error(proc, "inside the result folder")
    proc = lnpath_cli("tiles", DEMO, "--mpp", "4", "--out", result / "tiles")
    assert_one_line_error(proc, "inside the result folder")
    assert file_hashes(result) == before
    assert lnpath_cli("verify", result).returncode == 0


@pytest.mark.parametrize("stem", ["{dir}", ""], ids=["folder", "empty"])
def test_keygen_into_a_folder(stem: str, tmp_path: Path) -> None:
    """``--out DIR`` wrote DIR.pem beside the folder; ``--out ""`` was an internal error."""
    keys = tmp_path / "keys"
    keys.mkdir()
    proc = lnpath_cli("keygen", "--out", stem.format(dir=keys), cwd=tmp_path)
    assert_one_line_error(proc, "is a folder", "dr_renal")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]
    assert not any(keys.iterdir())


# --------------------------------------------------------------------------------------------
# batch


def _manifest(tmp_path: Path, rows: str = "") -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text("slide_id,path,patient_id,timepoint\n" + rows)
    return path


def test_batch_of_an_empty_manifest(tmp_path: Path) -> None:
    """A header without rows "succeeded" with exit 0 and an empty batch_status.csv."""
    out = tmp_path / "cohort"
    assert_one_line_error(lnpath_cli("batch", _manifest(tmp_path), "--out", out), "no slides")
    assert not out.exists()


def test_batch_into_a_file(tmp_path: Path) -> None:
    """It said "cannot create the batch folder (File exists)"."""
    out = tmp_path / "cohort"
    out.write_text("not a folder")
    manifest = _manifest(tmp_path, f"s1,{DEMO},P1,0\n")
    assert_one_line_error(lnpath_cli("batch", manifest, "--out", out), "is a file")
    assert out.read_text() == "not a folder"


@pytest.mark.skipif(importlib.util.find_spec("dask_jobqueue") is None, reason="no dask-jobqueue")
@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--slurm-jobs", "0", "--slurm-jobs must be >= 1"),
        ("--slurm-cores", "0", "--slurm-cores must be >= 1"),
        ("--slurm-memory", "lots", "--slurm-memory 'lots'"),
        ("--slurm-walltime", "forever", "--slurm-walltime 'forever'"),
    ],
)
def test_slurm_settings_sbatch_would_refuse(
    option: str, value: str, needle: str, tmp_path: Path
) -> None:
    """0 jobs or a walltime SLURM refuses waited for workers forever; memory 'lots' was an
    internal error."""
    out = tmp_path / "cohort"
    manifest = _manifest(tmp_path, f"s1,{DEMO},P1,0\n")
    proc = lnpath_cli("batch", manifest, "--out", out, "--slurm", option, value)
    assert_one_line_error(proc, needle)
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--scheduler", "nonsense", "scheduler nonsense: cannot connect"),
        ("--config", "missing.yaml", "no such configuration file"),
    ],
)
def test_batch_refused_before_its_folder_is_made(
    option: str, value: str, needle: str, tmp_path: Path
) -> None:
    """Both were refused after the (empty) batch folder had been created."""
    out = tmp_path / "cohort"
    manifest = _manifest(tmp_path, f"s1,{DEMO},P1,0\n")
    proc = lnpath_cli("batch", manifest, "--out", out, option, value, cwd=tmp_path)
    assert_one_line_error(proc, needle)
    assert not out.exists()


@pytest.mark.skipif(
    importlib.util.find_spec("dask_jobqueue") is None or shutil.which("sbatch") is None,
    reason="no dask-jobqueue or no SLURM here",
)
def test_slurm_batch_shows_no_dask_info_logs(tmp_path: Path) -> None:
    """Importing distributed set its loggers back to INFO, so under --slurm the scheduler's
    every connection was printed; only lnpath's own messages belong on the terminal."""
    if subprocess.run(["sinfo"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no SLURM controller answers here (CI starts one: scripts/ci_slurm.sh)")
    # one slide that fails its pre-flight: the cluster starts and stops, no job gets work
    manifest = _manifest(tmp_path, f"s1,{tmp_path / 'none.svs'},P1,0\n")
    proc = lnpath_cli("batch", manifest, "--out", tmp_path / "b", "--slurm", "--slurm-jobs", "1")
    assert proc.returncode == 1, proc.stderr  # the slide failed, the batch ran
    assert "distributed" not in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------
# training


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_train_glomeruli_refuses_its_output_before_training(kind: str, tmp_path: Path) -> None:
    """A file or a lab's own folder as --out was refused only after the whole fine-tuning."""
    out = tmp_path / "model"
    if kind == "file":
        out.write_text("keep")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("keep")
    proc = lnpath_cli(
        "train-glomeruli", "--slides", DEMO, "--annotations", OUTLINES, "--out", out, "--overwrite"
    )
    assert_one_line_error(proc, str(out))
    assert "training" not in proc.stderr  # no progress bar: it stopped before the first step
    assert (out.read_text() if kind == "file" else (out / "notes.txt").read_text()) == "keep"


def test_train_glomeruli_zero_threads(tmp_path: Path) -> None:
    """``--threads 0`` was taken as "not given" and trained on all cores."""
    out = tmp_path / "model"
    proc = lnpath_cli(
        "train-glomeruli",
        "--slides",
        DEMO,
        "--annotations",
        OUTLINES,
        "--out",
        out,
        "--threads",
        "0",
    )
    assert_one_line_error(proc, "--threads must be >= 1")
    assert not out.exists()


def test_train_lesions_names_the_mapping_in_words(tmp_path: Path) -> None:
    """It printed "(mapping {'Sclerotic': ('global_sclerosis',), ...})"."""
    out = tmp_path / "model"
    proc = lnpath_cli("train-lesions", "--qupath", OUTLINES, DEMO, "--out", out)
    line = assert_one_line_error(proc, "Glomerulus", "Sclerotic=global_sclerosis", "--map")
    assert "{" not in line and "('" not in line
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# workstation


def test_workstation_on_an_address_of_another_computer(demo_result_template: Path) -> None:
    """It asked "is another server using the port?" of an address this computer does not have."""
    proc = lnpath_cli("workstation", demo_result_template, "--host", "192.0.2.1")
    line = assert_one_line_error(proc, "192.0.2.1", "--host")
    assert "another server" not in line


def test_workstation_opens_a_folder_given_twice_once(
    demo_result_template: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``lnpath workstation R R`` put R twice in the queue, each saving over the other."""
    from lnpath.workstation.server import Workstation

    again = demo_result_template.parent / ".." / demo_result_template.parent.name / "r"
    server = Workstation([demo_result_template, again])
    try:
        assert [s.folder for s in server.sessions] == [demo_result_template]
    finally:
        server.close()
    assert f"{demo_result_template.resolve()} was given twice" in caplog.text
