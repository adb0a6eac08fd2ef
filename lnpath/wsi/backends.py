"""Pixel sources behind a Slide: OpenSlide for scanner formats, an array for plain images."""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import openslide
import openslide.lowlevel
from PIL import Image

from lnpath.core.errors import SlideError
from lnpath.wsi.tiff_check import tiff_truncation, unreadable_reason

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})


# openslide-python's public read_region returns a PIL image whose conversion to numpy costs
# about half as much as the decode itself; the C call into a numpy buffer avoids that.
_RAW_READ = getattr(openslide.lowlevel, "_read_region", None)


_DEFAULT_CACHE = 32 << 20  # OpenSlide's own per-handle default


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


_OPAQUE = np.uint32(0xFF000000)
_RGB_BYTES = slice(2, None, -1) if sys.byteorder == "little" else slice(1, None)
"""The R, G, B bytes of one native-endian ARGB pixel, in that order (BGRA in memory on x86)."""


def _argb_to_rgb(argb: np.ndarray) -> np.ndarray:
    """OpenSlide's native premultiplied ARGB (uint32) as an RGB (H, W, 3) view on white.

    No copy: the view's channels step backwards through each pixel's bytes, so a tile costs
    what OpenSlide's decode costs (a channel copy was 11-13 % of tiling, issue 18). Consumers
    that need contiguous memory (torch, PNG writers) copy once anyway. Premultiplied colour
    composited onto white is ``c + (255 - alpha)``, done in place where a pixel is not opaque.
    """
    bgra = argb.view(np.uint8).reshape(*argb.shape, 4)
    # every alpha byte is 255 exactly when every pixel, as a uint32, is >= 0xFF000000: one
    # contiguous pass instead of a strided one over the alpha bytes
    if argb.size and argb.min() < _OPAQUE:
        alpha_byte = 3 if sys.byteorder == "little" else 0
        colour = bgra[..., :3] if alpha_byte == 3 else bgra[..., 1:]
        colour += (255 - bgra[..., alpha_byte])[..., None]
    return bgra[..., _RGB_BYTES]


def packed_pixels(rgb: np.ndarray) -> np.ndarray | None:
    """The contiguous 4-byte pixels an RGB view from :func:`_argb_to_rgb` was cut from (for a
    plain memcpy to another process), or None when ``rgb`` is not such a view."""
    h, w = rgb.shape[:2]
    if rgb.ndim != 3 or rgb.dtype != np.uint8 or rgb.strides != (4 * w, 4, -1):
        return None
    bgr = rgb[..., ::-1]  # bytes 0, 1, 2 of each pixel; byte 3 (alpha) follows in the buffer
    return np.lib.stride_tricks.as_strided(bgr, (h, w, 4), (4 * w, 4, 1), writeable=False)


def rgb_image(rgb: np.ndarray) -> Image.Image:
    """A PIL image of an RGB array, read straight from OpenSlide's 4-byte pixels when ``rgb`` is
    a view from :func:`_argb_to_rgb`: PIL unpacks them in one pass, where making the strided view
    contiguous first cost 0.24 s of the demo's 1.8 s of resampled reads."""
    packed = packed_pixels(rgb)
    if packed is None:
        return Image.fromarray(np.ascontiguousarray(rgb))
    height, width = rgb.shape[:2]
    order = "BGRX" if sys.byteorder == "little" else "XRGB"
    return Image.frombuffer("RGB", (width, height), packed, "raw", order, 0, 1)


def unpacked_rgb(packed: np.ndarray) -> np.ndarray:
    """The RGB view of pixels from :func:`packed_pixels` (e.g. after copying them)."""
    return packed[..., 2::-1]


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
        # Read only the part inside the level and pad with opaque white: OpenSlide's transparent
        # outside would have to be composited, and reading only the inside keeps its pixels
        # exactly those of an unpadded read at the same place.
        level_w, level_h = self.level_dimensions[level]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, level_w), min(y + height, level_h)
        inside = (x0, y0, x1, y1) == (x, y, x + width, y + height)
        if _RAW_READ is None or not hasattr(self._osr, "_osr"):
            return self._read_public(level, x, y, width, height, (x0, y0, x1, y1))
        if inside:
            return _argb_to_rgb(self._read_argb(level, x, y, width, height))
        argb = np.full((height, width), 0xFFFFFFFF, dtype=np.uint32)
        if x1 > x0 and y1 > y0:
            # a uint32 row copy: ~6x cheaper than cutting RGB out of the ARGB pixels
            argb[y0 - y : y1 - y, x0 - x : x1 - x] = self._read_argb(
                level, x0, y0, x1 - x0, y1 - y0
            )
        return _argb_to_rgb(argb)

    def _read_public(
        self, level: int, x: int, y: int, width: int, height: int, box: tuple[int, int, int, int]
    ) -> np.ndarray:
        """The same through openslide-python's public read_region (PIL images)."""
        x0, y0, x1, y1 = box
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        if x1 > x0 and y1 > y0:
            location = self._location(level, x0, y0)
            try:
                region = self._osr.read_region(location, level, (x1 - x0, y1 - y0))
            except openslide.OpenSlideError as exc:
                raise self._error(level, location, x1 - x0, y1 - y0, exc) from exc
            out[y0 - y : y1 - y, x0 - x : x1 - x] = _rgba_image_to_rgb(region)
        return out

    def _read_argb(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """OpenSlide's premultiplied ARGB pixels of a rectangle inside the level."""
        location = self._location(level, x, y)
        argb = np.empty((height, width), dtype=np.uint32)
        assert _RAW_READ is not None  # read() checked
        try:
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
            raise self._error(level, location, width, height, exc) from exc
        return argb

    def _location(self, level: int, x: int, y: int) -> tuple[int, int]:
        ds = self.level_downsamples[level]
        return round(x * ds), round(y * ds)

    def _error(
        self, level: int, location: tuple[int, int], width: int, height: int, exc: Exception
    ) -> SlideError:
        cut = tiff_truncation(self.path)  # a copy cut short opens, then fails at its end
        return SlideError(
            f"{self.path}: cannot read region x={location[0]} y={location[1]} "
            f"width={width} height={height} (level {level}): {cut or exc}"
        )

    def close(self) -> None:
        """Close the handle with Ctrl-C held back until it is marked closed: openslide-python
        marks it in a Python callback after the C call, and a KeyboardInterrupt raised before
        that left it to be freed a second time at exit (a segmentation fault)."""
        if threading.current_thread() is not threading.main_thread():
            self._osr.close()  # signals are handled in the main thread only
            return
        held: list[int] = []
        previous = signal.signal(signal.SIGINT, lambda number, _frame: held.append(number))
        try:
            self._osr.close()
        finally:
            signal.signal(signal.SIGINT, previous)
        if held and callable(previous):
            previous(signal.SIGINT, None)


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
            with _whole_slide_image(path) as img:
                _check_fits_in_memory(path, img.size[0] * img.size[1], len(img.getbands()))
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
            pixels = page.imagewidth * page.imagelength  # type: ignore[union-attr]
            _check_fits_in_memory(path, pixels, page.samplesperpixel * page.dtype.itemsize)  # type: ignore[union-attr]
            arr = page.asarray()
            if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
                arr = np.moveaxis(arr, 0, -1)
            tags = page.tags  # type: ignore[union-attr]
            res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
            res_y = tags.get("YResolution")
            if res is not None and unit is not None and res.value[1]:
                self.properties["tiff.XResolution"] = str(res.value[0] / res.value[1])
                if res_y is not None and res_y.value[1]:
                    self.properties["tiff.YResolution"] = str(res_y.value[0] / res_y.value[1])
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


_PIL_LIMIT = threading.Lock()


def _whole_slide_image(path: Path) -> Image.Image:
    """``Image.open`` without PIL's decompression-bomb limit (178 Mpx; a warning from 89 Mpx):
    a 5 x 5 mm biopsy exported at 0.25 µm/px is 400 Mpx, and a local slide file is no attack.
    Memory is checked instead (:func:`_check_fits_in_memory`)."""
    with _PIL_LIMIT:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _check_fits_in_memory(path: Path, pixels: int, pixel_bytes: int) -> None:
    """A flat image is decoded whole: refuse one larger than half the free memory with the way
    out, instead of a MemoryError (or the machine swapping) half-way through."""
    need = pixels * max(3, pixel_bytes)  # decoded, then as RGB
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > free // 2:
        raise SlideError(
            f"{path}: a flat (not tiled) image of {need / 2**30:.1f} GiB decoded, more than half "
            f"the {free / 2**30:.1f} GiB of free memory; convert it to a tiled pyramid, e.g. "
            "vips tiffsave IN OUT.tiff --tile --pyramid --compression jpeg"
        )


def _folder_hint(path: Path) -> str:
    """Which file of a folder to give: a MIRAX slide's .mrxs beside its data folder, or one of
    a DICOM slide's files."""
    mirax = path.with_name(path.name + ".mrxs")
    if mirax.is_file():
        return f" (a MIRAX slide opens from its .mrxs file: {mirax})"
    dicom = next(iter(sorted(path.glob("*.dcm"))), None)
    return f" (a DICOM slide opens from any one of its files, e.g. {dicom})" if dicom else ""


_UNSUPPORTED = "not a slide format OpenSlide recognises (corrupt or unsupported file)"


def _open_backend(path: Path) -> _Backend:
    """Open ``path`` with OpenSlide, falling back to a plain-image reader for images."""
    if not path.exists():
        if path.is_symlink():  # a slide archive moved from under its links
            raise SlideError(f"{path}: a link to {os.readlink(path)}, which does not exist")
        raise SlideError(f"{path}: no such file")
    if path.is_dir():
        raise SlideError(f"{path}: is a directory, not a slide file{_folder_hint(path)}")
    if not path.is_file():  # reading a pipe would wait for a writer forever
        raise SlideError(f"{path}: not a regular file (a pipe, socket or device), not a slide")
    unreadable = unreadable_reason(path)  # OpenSlide calls these "unsupported format"
    if unreadable:
        raise SlideError(f"{path}: {unreadable}")
    is_image = path.suffix.lower() in IMAGE_SUFFIXES
    try:
        return _OpenSlideBackend(path)
    except openslide.OpenSlideUnsupportedFormatError:
        if not is_image:
            raise SlideError(f"{path}: {tiff_truncation(path) or _UNSUPPORTED}") from None
        reason = "OpenSlide does not recognise it"
    except openslide.OpenSlideError as exc:
        if not is_image:
            raise SlideError(f"{path}: cannot open slide: {tiff_truncation(path) or exc}") from None
        reason = f"OpenSlide: {exc}"
    except OSError as exc:
        raise SlideError(f"{path}: cannot open slide: {exc}") from None
    try:
        return _ArrayBackend(path)
    except SlideError:
        raise
    except Exception as exc:  # PIL/tifffile raise many types for a bad file
        cut = tiff_truncation(path)
        if cut:
            raise SlideError(f"{path}: {cut}") from None
        raise SlideError(f"{path}: cannot open image ({reason}; {exc})") from None


def _file_mpp(backend: _Backend) -> tuple[float, float, str] | None:
    """µm/px at level 0 across and down, and their source, or None when the file has none."""
    props = backend.properties
    mpp_x = props.get(openslide.PROPERTY_NAME_MPP_X)
    if mpp_x:
        mpp_y = props.get(openslide.PROPERTY_NAME_MPP_Y) or mpp_x
        # OpenSlide derives a generic TIFF's µm/px from its resolution tags, not scanner metadata.
        source = "tiff-resolution" if backend.vendor == "generic-tiff" else "metadata"
        return _number(mpp_x), _number(mpp_y), source
    res, unit = props.get("tiff.XResolution"), props.get("tiff.ResolutionUnit")
    res_y = props.get("tiff.YResolution") or res
    per_unit = {"centimeter": 10_000.0, "inch": 25_400.0}.get(unit or "")
    if res and res_y and per_unit and _number(res) > 0 and _number(res_y) > 0:
        return per_unit / _number(res), per_unit / _number(res_y), "tiff-resolution"
    return None


def _number(text: str) -> float:
    """A metadata value as a float; text that is not a number is NaN (refused as implausible)."""
    try:
        return float(text)
    except ValueError:
        return math.nan
