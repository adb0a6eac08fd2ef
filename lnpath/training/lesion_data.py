"""Labelled glomerulus crops for lesion training: from a folder + label table, or QuPath classes."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from skimage import io

from lnpath.analysis.lesions import square_crop
from lnpath.analysis.measure import read_glomerulus
from lnpath.core.args import refuse_eval_only
from lnpath.core.errors import InputError
from lnpath.core.findings import LESIONS
from lnpath.io.qupath import read_qupath
from lnpath.io.tables import check_row_lengths
from lnpath.wsi.slide import open_slide

log = logging.getLogger(__name__)

#: QuPath class names of the public glomerulus exports -> lesions they assert (empty = negative).
QUPATH_MAPPING: dict[str, tuple[str, ...]] = {
    "Sclerotic": ("global_sclerosis",),
    "Partially_sclerotic": ("segmental_sclerosis",),
    "Normal": (),
}


@dataclass
class LabelledCrops:
    """Glomerulus crops with multi-label targets.

    Attributes:
        images: (N, S, S, 3) uint8 crops, already resized to the network input size.
        targets: (N, L) float32 0/1 (NaN: not assessed), one column per entry of ``labels``.
        labels: lesion names (columns of the findings table).
        groups: (N,) slide or image of each crop; cross-validation keeps a group in one fold.
        classes: the original class name of each crop.
        mapping: class name -> lesions it asserts.
        source: what the crops came from (for the model card).
        mpp: µm/px the crops were read at (None when they came as image files of unknown scale).
        grouped_by: what ``groups`` are, for the card.
        provenance: extra card entries (e.g. the confirmed results the labels came from).
    """

    images: np.ndarray
    targets: np.ndarray
    labels: tuple[str, ...]
    groups: np.ndarray
    classes: list[str]
    mapping: dict[str, tuple[str, ...]]
    source: str
    mpp: float | None = None
    grouped_by: str = "slide/image"
    provenance: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """Positive and negative examples per label (not-assessed labels, NaN, left out)."""
        known = ~np.isnan(self.targets)
        pos = np.nansum(self.targets, axis=0)
        return {
            name: {"positive": int(p), "negative": int(n - p)}
            for name, p, n in zip(self.labels, pos, known.sum(axis=0), strict=True)
        }


def parse_mapping(items: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Parse ``CLASS=lesion[,lesion]`` strings (``CLASS=`` marks a negative class).

    Raises:
        InputError: an item has no ``=`` or names an unknown lesion.
    """
    mapping: dict[str, tuple[str, ...]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"class mapping {item!r}: expected CLASS=lesion[,lesion] or CLASS=")
        lesions = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [v for v in lesions if v not in LESIONS]
        if unknown:
            raise InputError(f"class mapping {item!r}: unknown lesion(s) {unknown}; use {LESIONS}")
        mapping[name.strip()] = lesions
    return mapping


def resolve_targets(
    classes: Sequence[str], mapping: Mapping[str, Sequence[str]], origin: str
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Turn class names into a target matrix.

    Classes absent from ``mapping`` are dropped with a warning naming them.

    Returns:
        ``(targets, labels, keep)``: targets for the kept samples, the label names, and a boolean
        mask of the kept samples.

    Raises:
        InputError: no class maps to a lesion, or a label lacks positive or negative examples.
    """
    names = np.asarray(list(classes), dtype=object)
    keep = np.array([c in mapping for c in names], dtype=bool)
    unknown = sorted({str(c) for c in names[~keep]})
    if unknown:
        log.warning("%s: %d samples of unmapped classes %s ignored", origin, (~keep).sum(), unknown)
    labels = tuple(sorted({les for c in names[keep] for les in mapping[c]}))
    if not labels:
        raise InputError(
            f"{origin}: none of the class names ({', '.join(sorted({str(c) for c in names}))}) "
            "maps to a lesion (mapping: "
            + "; ".join(f"{c}={','.join(les) or '(negative)'}" for c, les in mapping.items())
            + "; map yours with --map CLASS=LESION)"
        )
    targets = np.array(
        [[float(les in mapping[c]) for les in labels] for c in names[keep]], dtype=np.float32
    )
    for j, les in enumerate(labels):
        n_pos = int(targets[:, j].sum())
        if n_pos == 0 or n_pos == len(targets):
            raise InputError(
                f"{origin}: label {les} has {n_pos}/{len(targets)} positives; need both"
            )
    return targets, labels, keep


def read_label_table(table: str | Path) -> list[dict[str, str]]:
    """Rows of a crop label CSV with columns ``image``, ``class`` and optional ``group``/``mask``.

    Raises:
        InputError: the file is unreadable, not UTF-8, has a row of the wrong length (a short row
            read as class "None") or lacks the ``image`` and ``class`` columns.
    """
    table = Path(table)
    try:
        check_row_lengths(table)
        with table.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"{table}: cannot read label table ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{table}: cannot read label table ({exc})") from None
    if not rows or not {"image", "class"} <= set(rows[0]):
        raise InputError(f"{table}: need a header with columns 'image' and 'class' (and 'group')")
    return rows


def read_crop_image(path: str | Path) -> np.ndarray:
    """An image file as an array (RGB(A) or grey, as stored).

    Raises:
        InputError: the file is missing or not a readable image.
    """
    try:
        return np.asarray(io.imread(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read crop image ({exc})") from exc


def crops_from_folder(
    folder: str | Path,
    table: str | Path,
    mapping: Mapping[str, Sequence[str]],
    size: int = 64,
) -> LabelledCrops:
    """Load crops listed in a CSV with columns ``image``, ``class`` and optional ``group``.

    Raises:
        InputError: the CSV lacks the columns, an image is missing or unreadable, or a path lies
            under ``eval-only/``.
    """
    folder, table = Path(folder), Path(table)
    refuse_eval_only(folder, table)
    rows = read_label_table(table)
    targets, labels, keep = resolve_targets([r["class"] for r in rows], mapping, str(table))
    kept = [r for r, k in zip(rows, keep, strict=True) if k]
    refuse_eval_only(*(folder / row["image"] for row in kept))
    images = [square_crop(read_crop_image(folder / row["image"]), size) for row in kept]
    groups = np.array([r.get("group") or r["image"] for r in kept], dtype=object)
    return LabelledCrops(
        images=np.stack(images),
        targets=targets,
        labels=labels,
        groups=groups,
        classes=[r["class"] for r in kept],
        mapping={k: tuple(v) for k, v in mapping.items()},
        source=f"crops from {folder.name} listed in {table.name}",
    )


def _area(geometry: Any) -> float:
    return float(geometry.area)


def qupath_glomeruli(
    pairs: Sequence[tuple[str | Path, str | Path]],
    mpp: float,
    slide_mpp: float | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, str, str]]:
    """Read every classified glomerulus polygon of QuPath GeoJSON exports from its slide.

    Features without a polygon or class, and polygons that cannot be read (outside the slide,
    degenerate), are skipped with a warning naming them.

    Args:
        pairs: ``(geojson, slide)`` paths.
        mpp: µm/px to read crops at.
        slide_mpp: level-0 µm/px for slides that do not record it.

    Yields:
        ``(rgb, mask, class name, slide file name)`` per glomerulus; ``mask`` is the polygon.
    """

    refuse_eval_only(*(path for pair in pairs for path in pair))
    for geojson, slide_path in pairs:
        features = read_qupath(geojson)
        with open_slide(slide_path, mpp=slide_mpp) as slide:
            for i, feat in enumerate(features):
                # a MultiPolygon keeps its largest part: a glomerulus is one connected outline
                polys = sorted(getattr(feat.geometry, "geoms", [feat.geometry]), key=_area)
                if not polys or polys[-1].geom_type != "Polygon" or feat.classification is None:
                    log.warning("%s: feature %d has no polygon or class; skipped", geojson, i)
                    continue
                try:
                    rgb, mask = read_glomerulus(slide, polys[-1], mpp)
                except InputError as exc:
                    log.warning("%s: feature %d skipped: %s", geojson, i, exc)
                    continue
                yield rgb, mask, feat.classification, Path(slide_path).name


def crops_from_qupath(
    pairs: Sequence[tuple[str | Path, str | Path]],
    mapping: Mapping[str, Sequence[str]],
    mpp: float = 1.0,
    size: int = 64,
    slide_mpp: float | None = None,
) -> LabelledCrops:
    """Read the annotated glomeruli of QuPath GeoJSON exports from their slides.

    Args:
        pairs: ``(geojson, slide)`` paths.
        mapping: QuPath class name -> lesions.
        mpp: µm/px to read crops at (before resizing to ``size``).
        size: network input side in pixels.
        slide_mpp: level-0 µm/px for slides that do not record it.

    Raises:
        InputError: no class maps to a lesion, or no polygon could be read.
    """
    images, classes, groups = [], [], []
    for rgb, _, name, group in qupath_glomeruli(pairs, mpp, slide_mpp):
        images.append(square_crop(rgb, size))
        classes.append(name)
        groups.append(group)
    if not images:
        raise InputError(f"{[str(g) for g, _ in pairs]}: no readable classified polygons")
    origin = ", ".join(str(g) for g, _ in pairs)
    targets, labels, keep = resolve_targets(classes, mapping, origin)
    return LabelledCrops(
        images=np.stack(images)[keep],
        targets=targets,
        labels=labels,
        groups=np.asarray(groups, dtype=object)[keep],
        classes=[c for c, k in zip(classes, keep, strict=True) if k],
        mapping={k: tuple(v) for k, v in mapping.items()},
        source=f"QuPath annotations ({len(pairs)} slides)",
        mpp=mpp,
    )
