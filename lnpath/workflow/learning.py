"""Every confirmed biopsy teaches the lesion caller: train on a lab's own sign-outs.

``train_lesions_from_results`` takes result folders (or folders of them, as a batch writes), keeps
those a pathologist confirmed whose seals verify, counts each slide once, and trains the lesion CNN
or calibrates the morphometry on their confirmed calls (:mod:`lnpath.training.from_results`).
Provisional and tampered folders are ignored and counted, never used: a label nobody confirmed, or
one changed after confirmation, is not a pathologist's call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lnpath.core.errors import InputError, ResultError
from lnpath.io.atomic import check_output_dir
from lnpath.results.folder import load_result_json, read_findings_csv
from lnpath.training.from_results import ConfirmedResult
from lnpath.workflow.signoff import verify

log = logging.getLogger(__name__)

METHODS = ("cnn", "morphometry")


def result_folders(dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Each DIR as a result folder, or the result folders directly inside it (a batch output).

    Raises:
        InputError: a DIR does not exist or holds no result folder.
    """
    folders: list[Path] = []
    for d in dirs:
        path = Path(d)
        if (path / "result.json").is_file():
            folders.append(path)
            continue
        inside = (
            sorted(p for p in path.iterdir() if (p / "result.json").is_file())
            if path.is_dir()
            else []
        )
        if not inside:
            raise InputError(f"{path}: not a result folder, nor a folder of result folders")
        folders += inside
    return folders


def confirmed_results(
    dirs: Iterable[str | os.PathLike[str]],
) -> tuple[list[ConfirmedResult], dict[str, list[str]]]:
    """The confirmed, verified results among ``dirs``, one per slide, and what was left out.

    Of two confirmed results of one slide (same fingerprint) the later confirmation is kept: one
    biopsy counted twice would weigh its glomeruli double and leak between folds.

    Returns:
        ``(results, ignored)``; ``ignored`` maps ``provisional``, ``unverified`` and
        ``duplicate_slide`` to the folders left out for that reason.

    Raises:
        InputError: no folder is both confirmed and intact.
    """
    ignored: dict[str, list[str]] = {"provisional": [], "unverified": [], "duplicate_slide": []}
    by_slide: dict[str, ConfirmedResult] = {}
    folders = result_folders(dirs)
    for folder in folders:
        try:
            check = verify(folder)
        except ResultError as exc:
            log.warning("%s: ignored, its seal does not verify (%s)", folder, exc)
            ignored["unverified"].append(str(folder))
            continue
        if check.status != "confirmed":
            ignored["provisional"].append(str(folder))
            continue
        record = load_result_json(folder)
        result = ConfirmedResult(
            folder, record, check.content_sha256, read_findings_csv(folder / "findings.csv")
        )
        earlier = by_slide.get(result.slide_sha256)
        if earlier is not None:
            at = (record.get("confirmation") or {}).get("confirmed_at") or ""
            earlier_at = (earlier.record.get("confirmation") or {}).get("confirmed_at") or ""
            keep, drop = (result, earlier) if at >= earlier_at else (earlier, result)
            log.warning(
                "%s and %s are results of one slide: counted once", keep.folder, drop.folder
            )
            ignored["duplicate_slide"].append(str(drop.folder))
            result = keep
        by_slide[result.slide_sha256] = result
    if not by_slide:
        counts = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in ignored.items() if v)
        raise InputError(
            f"none of the {len(folders)} result folders is confirmed with an intact seal "
            f"({counts}): only a pathologist's confirmed calls are labels"
        )
    return list(by_slide.values()), ignored


def train_lesions_from_results(
    dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    method: str = "cnn",
    slide_root: str | os.PathLike[str] | None = None,
    mpp: float = 1.0,
    size: int = 64,
    arch: str = "small",
    folds: int = 5,
    epochs: int = 10,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a lesion model on the confirmed calls of confirmed result folders.

    Args:
        dirs: result folders, or folders holding result folders.
        out: model folder to write (usable with ``score_slide --lesion-model``).
        method: ``cnn`` (lesion CNN at ``mpp`` µm/px, ``size`` px input) or ``morphometry``
            (logistic calibration of the measurements, measured at 0.5 µm/px).
        slide_root: where to look for slides that moved since scoring (by file name).
        mpp, size, arch, epochs: CNN settings.
        folds: cross-validation folds, grouped by patient (else slide).
        seed: folds, bootstrap and training seed.
        overwrite: replace an existing model folder.
        progress: progress bars on stderr.

    Returns:
        The model card: per-lesion validation figures, refused lesions and the fingerprints of
        the results it learned from.

    Raises:
        InputError: no usable result or no lesion with enough labels (nothing written).
        SlideError: a result's slide moved or changed.
    """
    from lnpath.training.from_results import crops_from_results, measure_results

    if method not in METHODS:
        raise InputError(f"method {method!r}: use one of {', '.join(METHODS)}")
    if folds < 2:
        raise InputError("folds must be >= 2")
    check_output_dir(Path(out), overwrite, marker="card.json")
    results, ignored = confirmed_results(dirs)
    if method == "morphometry":
        from lnpath.training.calibration import calibrate_morphometry

        measured = measure_results(results, ignored, slide_root, progress=progress)
        return calibrate_morphometry(measured, out, folds=folds, seed=seed, overwrite=overwrite)
    from lnpath.training.lesions import train_lesion_model

    crops = crops_from_results(results, ignored, mpp, size, slide_root, progress=progress)
    return train_lesion_model(
        crops,
        out,
        arch=arch,
        folds=folds,
        epochs=epochs,
        seed=seed,
        overwrite=overwrite,
        progress=progress,
    )
