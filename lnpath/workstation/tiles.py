"""Deep Zoom tiles of a slide for OpenSeadragon, with an LRU cache of encoded JPEGs.

``limit_bounds=False`` keeps Deep Zoom's image coordinates equal to the slide's level-0 pixels,
the frame the result's outlines are in, so the overlay needs no offset.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

import openslide
from openslide.deepzoom import DeepZoomGenerator

from lnpath.core.errors import SlideError

TILE_SIZE = 254
OVERLAP = 1
JPEG_QUALITY = 80
CACHE_TILES = 4096  # ~60 KiB each: about 250 MiB at most


class DeepZoomTiles:
    """One slide's Deep Zoom pyramid; thread-safe, tiles cached as JPEG bytes."""

    def __init__(self, path: Path, cache_tiles: int = CACHE_TILES) -> None:
        try:
            self._slide = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideError(f"{path}: cannot open the slide for viewing ({exc})") from None
        self._dz = DeepZoomGenerator(
            self._slide, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=False
        )
        self._cache: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
        self._capacity = cache_tiles
        self._lock = threading.Lock()

    @property
    def level_count(self) -> int:
        """Number of Deep Zoom levels."""
        return int(self._dz.level_count)

    @property
    def level_tiles(self) -> tuple[tuple[int, int], ...]:
        """(columns, rows) of tiles at each level."""
        return tuple(self._dz.level_tiles)

    def dzi(self) -> str:
        """The ``.dzi`` XML descriptor."""
        return str(self._dz.get_dzi("jpeg"))

    def tile(self, level: int, col: int, row: int) -> bytes:
        """The JPEG of one tile; raises ``KeyError`` for a tile outside the pyramid."""
        key = (level, col, row)
        with self._lock:
            data = self._cache.get(key)
            if data is not None:
                self._cache.move_to_end(key)
                return data
        if not 0 <= level < self._dz.level_count:
            raise KeyError(key)
        cols, rows = self._dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise KeyError(key)
        image = self._dz.get_tile(level, (col, row)).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        data = buffer.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return data

    def clear_cache(self) -> None:
        """Forget every cached tile (the benchmark's cold start)."""
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        """Close the slide file."""
        self._slide.close()
