"""Every confirmed biopsy teaches the lesion caller: train on a lab's own sign-outs.

``train_lesions_from_results`` takes result folders (or folders of them, as a batch writes), keeps
those a pathologist confirmed whose seals verify, counts each slide once, and trains the lesion CNN
or calibrates the morphometry on their confirmed calls (:mod:`lnpath.training.from_results`).
Seals are checked with :func:`lnpath.results.seal.verify`, the check ``lnpath verify`` runs.
Provisional and tampered folders are ignored and counted, never used: a label nobody confirmed, or
one changed after confirmation, is not a pathologist's call. A result whose slide was archived
away (or replaced by another file) stops the run, or with ``skip_missing_slides`` is left out and
counted: years of sign-outs always include a few slides that are gone.
"""

from __future__ import annotations

import logging
import numbers
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lnpath.core.args import as_path, check_count, check_flag, check_optional_flag, check_seed
from lnpath.core.errors import InputError, ResultError
from lnpath.io.atomic import check_output_dir
from lnpath.results.folder import load_result_json, read_findings_csv
from lnpath.results.seal import verify
from lnpath.training.from_results import ConfirmedResult, crops_from_results, measure_results

log = logging.getLogger(__name__)

METHODS = ("cnn", "morphometry")
#: The largest lesion-network input side (px): 100000 was a MemoryError after every slide was read
MAX_SIZE = 1024

#: The name ``score_slide --supersede`` gives a confirmed result it moves aside
#: (:func:`lnpath.results.supersede.supersede_result`).
_SUPERSEDED_NAME = re.compile(r"\.superseded-\d{8}T\d{6}Z(-\d+)?$")


def result_folders(dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Each DIR as a result folder, or the result folders directly inside it (a batch output).

    Raises:
        InputError: a DIR does not exist or holds no result folder.
    """
    if isinstance(dirs, str | os.PathLike):  # one folder, not its characters one by one
        dirs = [dirs]
    if not isinstance(dirs, Iterable):
        raise InputError(f"dirs: expected result folders, got {type(dirs).__name__}")
    folders: list[Path] = []
    for d in dirs:
        path = as_path(d, "dirs")
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
    seen: set[str] = set()  # a folder named twice (``batch/`` and ``batch/r1``) is one result
    unique = []
    for folder in folders:
        if os.path.realpath(folder) not in seen:
            seen.add(os.path.realpath(folder))
            unique.append(folder)
    return unique


def _superseded(folders: Sequence[Path]) -> tuple[set[str], set[str]]:
    """Folders and seals (audit heads) that a later result among ``folders`` records superseding.

    Read from every folder, provisional ones too: a re-scored result replaces the confirmation it
    moved aside even before it is confirmed itself.
    """
    paths: set[str] = set()
    heads: set[str] = set()
    for folder in folders:
        try:
            record = load_result_json(folder).get("supersedes")
        except (ResultError, AttributeError):
            continue
        if isinstance(record, dict):
            if record.get("folder"):
                paths.add(os.path.realpath(str(record["folder"])))
            seal = record.get("seal")
            if isinstance(seal, dict) and seal.get("audit_head"):
                heads.add(str(seal["audit_head"]))
    return paths, heads


def confirmed_results(
    dirs: Iterable[str | os.PathLike[str]],
) -> tuple[list[ConfirmedResult], dict[str, list[str]]]:
    """The confirmed, verified results among ``dirs``, one per slide, and what was left out.

    Of two confirmed results of one slide (same fingerprint) the later confirmation is kept (on a
    tie, as for a copied folder, the first named): one biopsy counted twice would weigh its
    glomeruli double and leak between folds. A confirmed
    result that was superseded (moved aside to ``<name>.superseded-<time>`` by a re-scoring, or
    recorded as superseded by a result among ``dirs``) is left out: the lab replaced those calls.

    Returns:
        ``(results, ignored)``; ``ignored`` maps ``provisional``, ``unverified``, ``superseded``
        and ``duplicate_slide`` to the folders left out for that reason (training adds
        ``missing_slide`` and ``changed_slide``, once it has checked the slides).

    Raises:
        InputError: no folder is both confirmed and intact.
    """
    ignored: dict[str, list[str]] = {
        "provisional": [],
        "unverified": [],
        "superseded": [],
        "duplicate_slide": [],
    }
    by_slide: dict[str, ConfirmedResult] = {}
    folders = result_folders(dirs)
    superseded_paths, superseded_heads = _superseded(folders)
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
        head = (record.get("seal") or {}).get("audit_head")
        if (
            _SUPERSEDED_NAME.search(folder.name)
            or os.path.realpath(folder) in superseded_paths
            or (head is not None and str(head) in superseded_heads)
        ):
            log.warning("%s: ignored, a re-scoring superseded this confirmation", folder)
            ignored["superseded"].append(str(folder))
            continue
        result = ConfirmedResult(
            folder, record, check.content_sha256, read_findings_csv(folder / "findings.csv")
        )
        earlier = by_slide.get(result.slide_sha256)
        if earlier is not None:
            at = (record.get("confirmation") or {}).get("confirmed_at") or ""
            earlier_at = (earlier.record.get("confirmation") or {}).get("confirmed_at") or ""
            # a copy confirms at the same instant as its original: the first named stays
            keep, drop = (result, earlier) if at > earlier_at else (earlier, result)
            log.warning(
                "%s and %s are results of one slide: counted once", keep.folder, drop.folder
            )
            ignored["duplicate_slide"].append(str(drop.folder))
            result = keep
        by_slide[result.slide_sha256] = result
    if not by_slide:
        counts = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in ignored.items() if v)
        raise InputError(
            f"none of the {len(folders)} result folders is confirmed, intact and current "
            f"({counts}): only a pathologist's confirmed calls are labels"
        )
    return list(by_slide.values()), ignored


def check_cnn_settings(epochs: object, size: object, mpp: object, arch: object) -> None:
    """Refuse, before any slide is read, CNN settings that cannot train: ``epochs=0`` once wrote
    an untrained network with a card of metrics, a bad ``mpp`` read every glomerulus first.

    Raises:
        InputError: naming the setting.
    """
    from lnpath.nn.lesion_net import ARCHITECTURES  # torch: only when training
    from lnpath.wsi.slide import check_mpp

    check_count(epochs, "epochs")
    if (
        isinstance(size, bool)
        or not isinstance(size, numbers.Integral)
        or not 16 <= int(size) <= MAX_SIZE
    ):
        raise InputError(f"size must be a whole number of px from 16 to {MAX_SIZE}, got {size!r}")
    check_mpp(mpp, "mpp")  # type: ignore[arg-type]
    if arch not in ARCHITECTURES:
        raise InputError(f"arch {arch!r}: use one of {', '.join(ARCHITECTURES)}")


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
    progress: bool | None = None,
    skip_missing_slides: bool = False,
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
        progress: progress bars; default on in Jupyter and on a terminal, off in pipes
            (``LNPATH_PROGRESS``).
        skip_missing_slides: leave out (and count, and name in the card) results whose slide is
            in neither place or is another file (fingerprint differs), instead of stopping.

    Returns:
        The model card: per-lesion validation figures, refused lesions and the fingerprints of
        the results it learned from.

    Raises:
        InputError: a setting that cannot train (checked before any slide is read), no usable
            result (none left with its slide, too) or no lesion with enough labels (nothing
            written).
        SlideError: a result's slide moved or changed (without ``skip_missing_slides``).
    """
    if method not in METHODS:
        raise InputError(f"method {method!r}: use one of {', '.join(METHODS)}")
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
        raise InputError(f"folds must be a whole number >= 2, got {folds!r}")
    check_seed(seed, "seed")
    if method == "cnn":
        check_cnn_settings(epochs, size, mpp, arch)
    overwrite = check_flag(overwrite, "train_lesions_from_results: overwrite")
    skip_missing_slides = check_flag(
        skip_missing_slides, "train_lesions_from_results: skip_missing_slides"
    )
    progress = check_optional_flag(progress, "train_lesions_from_results: progress")
    check_output_dir(as_path(out, "out"), overwrite, marker="card.json")
    results, ignored = confirmed_results(dirs)
    root = None if slide_root is None else as_path(slide_root, "slide_root")
    if method == "morphometry":  # both trainers load torch: only when training
        from lnpath.training.calibration import calibrate_morphometry

        measured = measure_results(
            results, ignored, root, progress=progress, skip_missing_slides=skip_missing_slides
        )
        return calibrate_morphometry(
            measured, Path(out), folds=folds, seed=seed, overwrite=overwrite
        )
    from lnpath.training.lesions import train_lesion_model

    crops = crops_from_results(
        results,
        ignored,
        mpp,
        size,
        root,
        progress=progress,
        skip_missing_slides=skip_missing_slides,
    )
    return train_lesion_model(
        crops,
        Path(out),
        arch=arch,
        folds=folds,
        epochs=epochs,
        seed=seed,
        overwrite=overwrite,
        progress=progress,
    )
