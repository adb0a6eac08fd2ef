"""Open a whole-slide image (or a plain image) behind one reader that knows its µm/px.

Everything downstream asks for pixels in physical units, so a :class:`Slide` refuses to exist
without a trustworthy µm/px: read from the vendor metadata, derived from TIFF resolution tags, or
given by the caller — and it records which (peers.md #2). Coordinates are always level-0 pixels of
the uncropped image, origin top-left (QuPath's convention); the ``openslide.bounds-*`` crop is
reported, never applied (peers.md #6).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import openslide
import openslide.lowlevel
from PIL import Image

from .errors import InputError, SlideError

log = logging.getLogger(__name__)

MPP_RANGE = (0.05, 20.0)
"""Plausible µm/px: 0.05 (beyond any optical scanner) to 20 (a coarse overview image)."""
SNAP_TOLERANCE = 0.05
"""A pyramid level within 5 % of the requested µm/px is used as is, without resampling."""
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
_RESAMPLE = Image.Resampling.LANCZOS
_LANCZOS_SUPPORT = 3.0
_STRIP_SOURCE_PX = 16_000_000  # bound the memory of one resampled read (source pixels per strip)
_FINGERPRINT_CHUNK = 1 << 20
# openslide-python's public read_region returns a PIL image whose conversion to numpy costs
# about half as much as the decode itself; the C call into a numpy buffer avoids that.
_RAW_READ = getattr(openslide.lowlevel, "_read_region", None)
_DEFAULT_CACHE = 32 << 20  # OpenSlide's own per-handle default


def check_mpp(mpp: float, what: str) -> float:
    """Return ``mpp`` as a float, or raise :class:`InputError` if it is implausible.

    Args:
        mpp: µm per pixel.
        what: names the value in the message (e.g. ``"--mpp"``).
    """
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise InputError(f"{what}: {mpp!r} is not a number of µm/px") from None
    if not (math.isfinite(value) and MPP_RANGE[0] <= value <= MPP_RANGE[1]):
        raise InputError(
            f"{what}: {mpp} µm/px is outside the plausible range {MPP_RANGE[0]}–{MPP_RANGE[1]}"
        )
    return value


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


class _Backend(Protocol):
    """What a pixel source provides; level coordinates, RGB uint8 out, white outside."""

    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    properties: dict[str, str]
    vendor: str | None
    associated_images: list[str]

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray: ...

    def tile_size(self, level: int) -> tuple[int, int] | None: ...

    def close(self) -> None: ...


def _rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite un-premultiplied RGBA (plain images) onto white: transparent means no tissue."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    clear = alpha != 255
    if not clear.any():
        return rgb
    rgb = rgb.copy()
    a = alpha[clear][:, None].astype(np.uint16)
    rgb[clear] = ((rgb[clear].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(
        np.uint8
    )
    return rgb


def _argb_to_rgb(argb: np.ndarray) -> np.ndarray:
    """OpenSlide's native premultiplied ARGB (uint32) to RGB on white, without PIL.

    Premultiplied colour composited onto white is simply ``c + (255 - alpha)``.
    """
    bgra = argb.view(np.uint8).reshape(*argb.shape, 4)
    if sys.byteorder != "little":
        bgra = bgra[..., ::-1]
    rgb = np.empty((*argb.shape, 3), dtype=np.uint8)
    for out_channel, in_channel in enumerate((2, 1, 0)):  # plane copies are ~6x faster than a
        rgb[..., out_channel] = bgra[..., in_channel]  # strided (h, w, 3) gather
    alpha = bgra[..., 3]
    if alpha.min() != 255:
        rgb += (255 - alpha)[..., None]
    return rgb


def _rgba_image_to_rgb(region: Image.Image) -> np.ndarray:
    """The same for a PIL image, in C: most regions are fully opaque and only drop alpha."""
    if np.asarray(region)[..., 3].min() != 255:
        region = Image.alpha_composite(Image.new("RGBA", region.size, "white"), region)
    return np.asarray(region.convert("RGB"))


class _OpenSlideBackend:
    """Pixels through OpenSlide (SVS, generic tiled TIFF, DICOM, NDPI, MRXS, ...)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._osr = openslide.OpenSlide(str(path))
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
            (int(w), int(h)) for w, h in self._osr.level_dimensions
        )
        self.level_downsamples: tuple[float, ...] = tuple(
            float(d) for d in self._osr.level_downsamples
        )
        self.properties = dict(self._osr.properties)
        self.vendor = self.properties.get(openslide.PROPERTY_NAME_VENDOR)
        self.associated_images = sorted(self._osr.associated_images.keys())

    def tile_size(self, level: int) -> tuple[int, int] | None:
        w = self.properties.get(f"openslide.level[{level}].tile-width")
        h = self.properties.get(f"openslide.level[{level}].tile-height")
        return (int(w), int(h)) if w and h else None

    def set_cache_bytes(self, nbytes: int) -> None:
        """Give this handle its own decoded-tile cache (neighbouring reads reuse tiles)."""
        self._osr.set_cache(openslide.OpenSlideCache(int(nbytes)))

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        # Read only the part inside the level and pad in memory: compositing a partly
        # transparent region onto white costs more than the read itself.
        level_w, level_h = self.level_dimensions[level]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, level_w), min(y + height, level_h)
        if (x0, y0, x1, y1) == (x, y, x + width, y + height):
            return self._read_inside(level, x, y, width, height)
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read_inside(
                level, x0, y0, x1 - x0, y1 - y0
            )
        return out

    def _read_inside(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        location = (round(x * ds), round(y * ds))
        try:
            if _RAW_READ is None or not hasattr(self._osr, "_osr"):
                return _rgba_image_to_rgb(self._osr.read_region(location, level, (width, height)))
            argb = np.empty((height, width), dtype=np.uint32)
            _RAW_READ(
                self._osr._osr,
                argb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)),
                location[0],
                location[1],
                level,
                width,
                height,
            )
        except openslide.OpenSlideError as exc:
            raise SlideError(
                f"{self.path}: cannot read region x={location[0]} y={location[1]} "
                f"width={width} height={height} (level {level}): {exc}"
            ) from exc
        return _argb_to_rgb(argb)

    def close(self) -> None:
        self._osr.close()


class _ArrayBackend:
    """A plain PNG/JPEG/TIFF image decoded into memory: one level, no metadata µm/px."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.properties: dict[str, str] = {}
        self.vendor: str | None = None
        self.associated_images: list[str] = []
        self._rgb = self._load(path)
        h, w = self._rgb.shape[:2]
        self.level_dimensions: tuple[tuple[int, int], ...] = ((int(w), int(h)),)
        self.level_downsamples: tuple[float, ...] = (1.0,)

    def _load(self, path: Path) -> np.ndarray:
        if path.suffix.lower() in {".tif", ".tiff"}:
            arr = self._load_tiff(path)
        else:
            with Image.open(path) as img:
                img.load()
                rgb: Image.Image = img
                if img.mode not in {"RGB", "RGBA"}:
                    rgb = img.convert("RGBA" if "A" in img.getbands() else "RGB")
                arr = np.asarray(rgb)
        if arr.dtype != np.uint8:
            raise SlideError(f"{path}: unsupported pixel type {arr.dtype} (expected 8-bit RGB)")
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise SlideError(f"{path}: unsupported image shape {arr.shape} (expected RGB)")
        return np.ascontiguousarray(_rgba_to_rgb(arr) if arr.shape[2] == 4 else arr)

    def _load_tiff(self, path: Path) -> np.ndarray:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            arr = page.asarray()
            if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
                arr = np.moveaxis(arr, 0, -1)
            tags = page.tags  # type: ignore[union-attr]
            res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
            if res is not None and unit is not None:
                self.properties["tiff.XResolution"] = str(res.value[0] / res.value[1])
                self.properties["tiff.ResolutionUnit"] = {2: "inch", 3: "centimeter"}.get(
                    int(unit.value), "none"
                )
        return arr

    def tile_size(self, level: int) -> tuple[int, int] | None:
        return None

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        h, w = self._rgb.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, w), min(y + height, h)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._rgb[y0:y1, x0:x1]
        return out

    def close(self) -> None:
        self._rgb = np.empty((0, 0, 3), dtype=np.uint8)


def _open_backend(path: Path) -> _Backend:
    """Open ``path`` with OpenSlide, falling back to a plain-image reader for images."""
    if not path.exists():
        raise SlideError(f"{path}: no such file")
    if path.is_dir():
        raise SlideError(f"{path}: is a directory, not a slide file")
    is_image = path.suffix.lower() in IMAGE_SUFFIXES
    try:
        return _OpenSlideBackend(path)
    except openslide.OpenSlideUnsupportedFormatError:
        if not is_image:
            raise SlideError(
                f"{path}: not a slide format OpenSlide recognises (corrupt or unsupported file)"
            ) from None
        reason = "OpenSlide does not recognise it"
    except openslide.OpenSlideError as exc:
        if not is_image:
            raise SlideError(f"{path}: cannot open slide: {exc}") from None
        reason = f"OpenSlide: {exc}"
    except OSError as exc:
        raise SlideError(f"{path}: cannot open slide: {exc}") from None
    try:
        return _ArrayBackend(path)
    except SlideError:
        raise
    except Exception as exc:  # PIL/tifffile raise many types for a bad file
        raise SlideError(f"{path}: cannot open image ({reason}; {exc})") from None


def _file_mpp(backend: _Backend) -> tuple[float, str] | None:
    """µm/px at level 0 from the file and its source, or None when the file has none."""
    props = backend.properties
    mpp_x = props.get(openslide.PROPERTY_NAME_MPP_X)
    if mpp_x:
        mpp_y = props.get(openslide.PROPERTY_NAME_MPP_Y, mpp_x)
        if abs(float(mpp_x) - float(mpp_y)) > 0.01 * float(mpp_x):
            log.warning("non-square pixels (%s x %s µm); using the x value", mpp_x, mpp_y)
        # OpenSlide derives a generic TIFF's µm/px from its resolution tags, not scanner metadata.
        source = "tiff-resolution" if backend.vendor == "generic-tiff" else "metadata"
        return float(mpp_x), source
    res, unit = props.get("tiff.XResolution"), props.get("tiff.ResolutionUnit")
    per_unit = {"centimeter": 10_000.0, "inch": 25_400.0}.get(unit or "")
    if res and per_unit and float(res) > 0:
        return per_unit / float(res), "tiff-resolution"
    return None


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
        self.path = Path(path)
        self._mpp_override = None if mpp is None else check_mpp(mpp, "mpp")
        self._backend: _Backend | None = None
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
            value, source = found
            if not MPP_RANGE[0] <= value <= MPP_RANGE[1]:
                backend.close()
                raise MissingMppError(
                    self.path,
                    f"µm/px {value:.4g} from {source} is outside {MPP_RANGE[0]}–{MPP_RANGE[1]} "
                    "(a placeholder, not a scan resolution)",
                )
            self._mpp, self._mpp_source = value, source
        self._backend = backend
        return backend

    @property
    def _b(self) -> _Backend:
        return self._backend if self._backend is not None else self._open()

    # --- pickling: a path, never a handle -------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "mpp": self._mpp_override}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = Path(state["path"])
        self._mpp_override = state["mpp"]
        self._backend = None
        self._mpp, self._mpp_source = 0.0, ""

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, mpp={self.mpp:.4g} [{self.mpp_source}])"

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
        """Release the file handle; a later read reopens it."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

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
        return len(self._b.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._b.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._b.level_downsamples

    def level_mpp(self, level: int) -> float:
        """µm/px of pyramid ``level``."""
        return self.mpp * self.level_downsamples[level]

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
        target = mpp / self.mpp
        downsamples = self.level_downsamples
        for level, ds in enumerate(downsamples):
            if abs(ds / target - 1.0) <= SNAP_TOLERANCE:
                return LevelChoice(level, 1.0)
        finer = [lvl for lvl, ds in enumerate(downsamples) if ds < target]
        level = max(finer, key=lambda lvl: downsamples[lvl]) if finer else 0
        return LevelChoice(level, target / downsamples[level])

    def reserve_cache(self, nbytes: int) -> None:
        """Let this handle keep at least ``nbytes`` of decoded file tiles (OpenSlide only), so a
        band of tiles read row by row decodes every file tile once."""
        backend = self._b
        if isinstance(backend, _OpenSlideBackend) and nbytes > _DEFAULT_CACHE:
            backend.set_cache_bytes(nbytes)

    def read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Raw pixels of ``level`` in that level's own coordinates (white outside the slide)."""
        return self._b.read(level, int(x), int(y), int(width), int(height))

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
        if width <= 0 or height <= 0:
            raise InputError(f"{self.path}: region size must be positive, got {width}x{height}")
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
        """Size and sha256 over the first and last MiB (plus the size) to identify the file
        in provenance records without hashing gigabytes."""
        size = self.path.stat().st_size
        digest = hashlib.sha256(str(size).encode())
        with self.path.open("rb") as fh:
            digest.update(fh.read(_FINGERPRINT_CHUNK))
            if size > _FINGERPRINT_CHUNK:
                fh.seek(max(_FINGERPRINT_CHUNK, size - _FINGERPRINT_CHUNK))
                digest.update(fh.read(_FINGERPRINT_CHUNK))
        return {"size": size, "sha256": digest.hexdigest()}


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
    img = src if isinstance(src, Image.Image) else Image.fromarray(np.ascontiguousarray(src))
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
