"""Open a whole-slide image (or a plain image) behind one reader that knows its µm/px.

Everything downstream asks for pixels in physical units, so a :class:`Slide` refuses to exist
without a trustworthy µm/px: read from the vendor metadata, derived from TIFF resolution tags, or
given by the caller — and it records which (peers.md #2). Coordinates are always level-0 pixels of
the uncropped image, origin top-left (QuPath's convention); the ``openslide.bounds-*`` crop is
reported, never applied (peers.md #6).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from lnpath.core.errors import InputError, SlideError
from lnpath.io.hashing import file_sha256
from lnpath.wsi.backends import (
    _DEFAULT_CACHE,
    _Backend,
    _file_mpp,
    _open_backend,
    _OpenSlideBackend,
    rgb_image,
)

log = logging.getLogger(__name__)

MPP_RANGE = (0.05, 20.0)
"""Plausible µm/px: 0.05 (beyond any optical scanner) to 20 (a coarse overview image)."""
SQUARE_TOLERANCE = 0.01
"""Pixels whose height and width differ by more than 1 % are refused: areas would be wrong."""
SNAP_TOLERANCE = 0.05
"""A pyramid level within 5 % of the requested µm/px is used as is, without resampling."""
_RESAMPLE = Image.Resampling.LANCZOS
_LANCZOS_SUPPORT = 3.0
_STRIP_SOURCE_PX = 16_000_000  # bound the memory of one resampled read (source pixels per strip)


def require_open(slide: object, who: str) -> None:
    """A file path (or anything else, e.g. arguments swapped) given where an open slide belongs
    gets the fix, not ``AttributeError: 'str' object has no attribute 'mpp'``."""
    if isinstance(slide, str | os.PathLike):
        raise InputError(
            f"{who}: {os.fspath(slide)!s} is a path; open the slide first: lnpath.open_slide(path)"
        )
    if not isinstance(slide, Slide):
        raise InputError(
            f"{who}: expected an open Slide (lnpath.open_slide(path)), got {type(slide).__name__}"
        )


def check_mpp(mpp: float, what: str) -> float:
    """Return ``mpp`` as a float, or raise :class:`InputError` if it is implausible.

    Args:
        mpp: µm per pixel.
        what: names the value in the message (e.g. ``"--mpp"``).
    """
    try:
        if isinstance(mpp, bool):  # float(True) is 1.0: a flag passed by mistake, not a µm/px
            raise TypeError
        value = float(mpp)
    except (TypeError, ValueError):
        raise InputError(f"{what}: {mpp!r} is not a number of µm/px") from None
    if not (math.isfinite(value) and MPP_RANGE[0] <= value <= MPP_RANGE[1]):
        raise InputError(
            f"{what}: {mpp} µm/px is outside the plausible range {MPP_RANGE[0]}–{MPP_RANGE[1]}"
        )
    return value


def coarse_scan(slide_mpp: float, model_mpp: float) -> str:
    """What a scan coarser than a model's µm/px costs (a log line and a result warning)."""
    return (
        f"scanned at {slide_mpp:.3g} µm/px, coarser than the {model_mpp:.3g} µm/px the models "
        "work at: pixels are enlarged, so outlines and lesion calls are less reliable"
    )


def slide_file(
    slide: str | os.PathLike[str] | Slide, mpp: float | None, who: str
) -> tuple[Path, float | None]:
    """The file to open and the µm/px to open it at, from a path or an open Slide: a notebook
    holds the Slide, so it gives its path and the µm/px its caller set (unless ``mpp`` is).

    Raises:
        SlideError: ``slide`` is neither.
    """
    if isinstance(slide, Slide):
        return slide.path, (slide.mpp if mpp is None and slide.mpp_source == "caller" else mpp)
    if not isinstance(slide, str | os.PathLike):
        raise SlideError(f"{who}: expected a slide file path (got {type(slide).__name__})")
    return Path(slide), mpp


class MissingMppError(SlideError):
    """The file has no plausible µm/px and the caller gave none.

    Attributes:
        path: the slide.
        reason: what is wrong, without the advice (callers name their own option).
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}; pass the scanner's value with --mpp (or mpp=)")

    def __reduce__(self) -> tuple[type[MissingMppError], tuple[Path, str]]:
        # re-raised across processes (tile workers) with its own arguments
        return type(self), (self.path, self.reason)


@dataclass(frozen=True)
class LevelChoice:
    """How a requested µm/px is produced: which level, and how many level px per output px.

    ``scale == 1.0`` means the level is used as is (snapped within :data:`SNAP_TOLERANCE`);
    otherwise the level is the next finer one and pixels are resampled by ``1 / scale``.
    """

    level: int
    scale: float

    @property
    def resampled(self) -> bool:
        return self.scale != 1.0


class Slide:
    """A slide (or image) with a known µm/px; open it with :func:`open_slide`.

    The handle is opened lazily and a Slide pickles as ``(path, mpp override)`` only, so worker
    processes each open their own handle (OpenSlide handles cannot cross processes; peers.md #3).
    """

    def __init__(self, path: str | os.PathLike[str], mpp: float | None = None) -> None:
        if not isinstance(path, str | os.PathLike):
            raise SlideError(f"open_slide: expected a file path (got {type(path).__name__})")
        self.path = Path(path)
        self._mpp_override = None if mpp is None else check_mpp(mpp, "mpp")
        self._backend: _Backend | None = None
        self._opening = threading.Lock()
        self._mpp = 0.0
        self._mpp_source = ""
        self._open()

    def _open(self) -> _Backend:
        backend = _open_backend(self.path)
        if self._mpp_override is not None:
            self._mpp, self._mpp_source = self._mpp_override, "caller"
        else:
            found = _file_mpp(backend)
            if found is None:
                backend.close()
                raise MissingMppError(self.path, "no µm/px in the file")
            value, value_y, source = found
            if not MPP_RANGE[0] <= value <= MPP_RANGE[1]:
                backend.close()
                raise MissingMppError(
                    self.path,
                    f"µm/px {value:.4g} from {source} is outside {MPP_RANGE[0]}–{MPP_RANGE[1]} "
                    "(a placeholder, not a scan resolution)",
                )
            if not abs(value_y / value - 1.0) <= SQUARE_TOLERANCE:
                backend.close()
                raise MissingMppError(
                    self.path,
                    f"non-square pixels in {source} ({value:.4g} µm/px across, {value_y:.4g} "
                    "down): lnpath measures lengths and areas in square pixels, so they would "
                    "be wrong (if the scanner's pixels are square, the metadata is wrong)",
                )
            self._mpp, self._mpp_source = value, source
        self._backend = backend
        return backend

    @property
    def _b(self) -> _Backend:
        backend = self._backend
        if backend is not None:
            return backend
        with self._opening:  # threads measuring a closed or unpickled slide open it once
            return self._backend if self._backend is not None else self._open()

    # --- pickling: a path, never a handle -------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "mpp": self._mpp_override}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = Path(state["path"])
        self._mpp_override = state["mpp"]
        self._backend = None
        self._opening = threading.Lock()
        self._mpp, self._mpp_source = 0.0, ""

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, mpp={self.mpp:.4g} [{self.mpp_source}])"

    def _repr_html_(self) -> str:
        from lnpath.wsi.pictures import slide_html

        return slide_html(self)

    # --- context manager -----------------------------------------------------------------
    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the file handle; a later read reopens it.

        The handle is dropped before it is closed: a Ctrl-C landing between the two left it set,
        and the ``with`` block's close freed it again (OpenSlide: a segmentation fault)."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    # --- geometry and metadata -----------------------------------------------------------
    @property
    def mpp(self) -> float:
        """Level-0 µm per pixel."""
        self._b  # noqa: B018 - opening sets the value after unpickling
        return self._mpp

    @property
    def mpp_source(self) -> str:
        """Where :attr:`mpp` came from: ``"metadata"``, ``"tiff-resolution"`` or ``"caller"``."""
        self._b  # noqa: B018
        return self._mpp_source

    @property
    def vendor(self) -> str | None:
        """The format as OpenSlide names it (``aperio``, ``generic-tiff``); None without it."""
        return self._b.vendor

    @property
    def properties(self) -> dict[str, str]:
        """All file metadata as strings (OpenSlide property names)."""
        return dict(self._b.properties)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return self._b.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """How many pyramid levels the file holds (0 is the full resolution)."""
        return len(self._b.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) in pixels of each level, level 0 first."""
        return self._b.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """How many level-0 pixels one pixel of each level spans (1.0 for level 0)."""
        return self._b.level_downsamples

    def level_mpp(self, level: int) -> float:
        """µm/px of pyramid ``level``."""
        return self.mpp * self.level_downsamples[self._level(level)]

    def _level(self, level: int) -> int:
        """``level`` checked: an IndexError from deep inside names no slide and no range."""
        count = len(self.level_dimensions)
        if isinstance(level, bool) or not isinstance(level, int | np.integer):
            raise InputError(f"{self.path}: level must be an integer, got {level!r}")
        if not 0 <= level < count:
            raise InputError(f"{self.path}: level {level} does not exist (levels 0–{count - 1})")
        return int(level)

    def native_tile_size(self, level: int) -> tuple[int, int] | None:
        """The file's own tile size at ``level`` (aligned reads are much faster), if tiled."""
        return self._b.tile_size(level)

    @property
    def bounds(self) -> tuple[int, int, int, int] | None:
        """(x, y, width, height) of the non-empty region (``openslide.bounds-*``), if known."""
        props = self._b.properties
        keys = ("x", "y", "width", "height")
        values = [props.get(f"openslide.bounds-{k}") for k in keys]
        if any(v is None for v in values):
            return None
        x, y, w, h = (int(v) for v in values)  # type: ignore[arg-type]
        return x, y, w, h

    @property
    def associated_images(self) -> list[str]:
        """Names of label/macro/thumbnail images stored beside the pyramid."""
        return list(self._b.associated_images)

    # --- pixels --------------------------------------------------------------------------
    def best_level(self, mpp: float) -> LevelChoice:
        """The level that produces ``mpp``: one within 5 %, else the next finer one."""
        target = check_mpp(mpp, "best_level: mpp") / self.mpp
        downsamples = self.level_downsamples
        for level, ds in enumerate(downsamples):
            if abs(ds / target - 1.0) <= SNAP_TOLERANCE:
                return LevelChoice(level, 1.0)
        finer = [lvl for lvl, ds in enumerate(downsamples) if ds < target]
        level = max(finer, key=lambda lvl: downsamples[lvl]) if finer else 0
        return LevelChoice(level, target / downsamples[level])

    def reserve_cache(self, nbytes: int, *, exactly: bool = False) -> None:
        """Let this handle keep at least ``nbytes`` of decoded file tiles (OpenSlide only), so a
        band of tiles read row by row decodes every file tile once.

        ``exactly``: keep no more, for a handle private to one pass (a reader process's), where
        filling OpenSlide's 32 MiB default with tiles no later read wants only costs memory: a
        fresh process pays a page fault per 4 KiB of it (about 8000 per reader, measured).
        """
        backend = self._b
        if isinstance(backend, _OpenSlideBackend) and (exactly or nbytes > _DEFAULT_CACHE):
            backend.set_cache_bytes(nbytes)

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Raw pixels of ``level`` in that level's own coordinates (white outside the slide)."""
        self._check_region(x, y, width, height)
        return self._b.read(self._level(level), int(x), int(y), int(width), int(height))

    def _check_region(self, x: float, y: float, width: float, height: float) -> None:
        """A region of numbers, finite, of positive size (NaN or text failed deep in numpy)."""
        values = (x, y, width, height)
        if not all(isinstance(v, int | float | np.number) and math.isfinite(v) for v in values):
            raise InputError(f"{self.path}: region must be finite numbers, got {values}")
        if width <= 0 or height <= 0:
            raise InputError(f"{self.path}: region size must be positive, got {width}x{height}")

    def read(
        self, x: float, y: float, width: float, height: float, mpp: float | None = None
    ) -> np.ndarray:
        """Read a level-0 rectangle at ``mpp`` µm/px as RGB uint8 (H, W, 3).

        The output is ``round(width * slide.mpp / mpp)`` wide (likewise high). A pyramid level
        within 5 % of ``mpp`` is read as is; otherwise the next finer level is read and
        resampled with an antialiasing (Lanczos) filter, in strips so that memory stays bounded.

        Raises:
            InputError: non-positive size or implausible ``mpp``.
            SlideError: the file cannot be decoded there (the message names the region).
        """
        mpp = self.mpp if mpp is None else check_mpp(mpp, "mpp")
        self._check_region(x, y, width, height)
        target = mpp / self.mpp
        out_w, out_h = max(1, round(width / target)), max(1, round(height / target))
        choice = self.best_level(mpp)
        ds = self.level_downsamples[choice.level]
        if not choice.resampled:
            return self.read_level(choice.level, round(x / ds), round(y / ds), out_w, out_h)
        return self.read_resampled(choice, x / ds, y / ds, out_w, out_h)

    def read_resampled(
        self, choice: LevelChoice, fx: float, fy: float, out_w: int, out_h: int
    ) -> np.ndarray:
        """Resample ``choice.level`` from float level coordinates ``(fx, fy)`` to an out_w x out_h
        image (``choice.scale`` level px per output px), reading strips with filter margins."""
        scale = choice.scale
        margin = resample_margin(scale)
        rows = max(1, int(_STRIP_SOURCE_PX / max(1.0, out_w * scale * scale)))
        strips = []
        for j0 in range(0, out_h, rows):
            j1 = min(out_h, j0 + rows)
            box_y0, box_y1 = fy + j0 * scale, fy + j1 * scale
            sx0, sy0 = math.floor(fx) - margin, math.floor(box_y0) - margin
            sx1, sy1 = math.ceil(fx + out_w * scale) + margin, math.ceil(box_y1) + margin
            src = self.read_level(choice.level, sx0, sy0, sx1 - sx0, sy1 - sy0)
            box = (fx - sx0, box_y0 - sy0, fx + out_w * scale - sx0, box_y1 - sy0)
            strips.append(resample(src, box, (out_w, j1 - j0)))
        return strips[0] if len(strips) == 1 else np.concatenate(strips, axis=0)

    def thumbnail(self, mpp: float) -> np.ndarray:
        """The whole slide at ``mpp`` µm/px (e.g. 8.0 for a low-resolution overview)."""
        width, height = self.dimensions
        return self.read(0, 0, width, height, mpp)

    def fingerprint(self) -> dict[str, Any]:
        """Size and the sha256 of the whole file, streamed: the value ``sha256sum`` prints, so
        an audit can check a result against the slide archive (``scheme`` names it, since
        results written before lnpath hashed whole files carry a first-and-last-MiB hash)."""
        return {
            "size": self.path.stat().st_size,
            "sha256": file_sha256(self.path),
            "scheme": "sha256",
        }


def resample_margin(scale: float) -> int:
    """Source pixels around a box that the resampling filter reads at ``scale`` source px per
    output px (0 when nothing is resampled)."""
    return 0 if scale == 1.0 else math.ceil(_LANCZOS_SUPPORT * max(scale, 1.0)) + 1


def resample(
    src: np.ndarray | Image.Image,
    box: tuple[float, float, float, float],
    size: tuple[int, int],
) -> np.ndarray:
    """Antialiased (Lanczos) resize of the float ``box`` (x0, y0, x1, y1) of ``src`` to ``size``.

    Pixels outside the box but inside ``src`` feed the filter, so callers pass a margin and get
    the same pixels whether they resample a whole region or a tile of it. Pass a PIL image when
    cutting many boxes from one source (converting it costs as much as a small resize).
    """
    img = src if isinstance(src, Image.Image) else rgb_image(src)
    return np.asarray(img.resize(size, _RESAMPLE, box=box))


def open_slide(path: str | os.PathLike[str], mpp: float | None = None) -> Slide:
    """Open a whole-slide image or a plain PNG/JPEG/TIFF image.

    Args:
        path: a file OpenSlide opens (SVS, tiled TIFF, DICOM, NDPI, MRXS, ...) or a plain image.
        mpp: level-0 µm/px; overrides the file's value and is required when the file has none
            (plain images, some TIFFs).

    Raises:
        SlideError: missing/unreadable file, or no plausible µm/px and no ``mpp``.
        InputError: ``mpp`` outside 0.05–20.
    """
    return Slide(path, mpp=mpp)
