"""Why a slide file does not open: empty, unreadable, or a TIFF cut short.

OpenSlide answers an interrupted copy of an SVS/NDPI/TIFF with "unsupported format" and a plain
TIFF reader with "Empty input file"; neither tells a lab to copy the file again. These checks run
only after an open or a read has failed, so they cost nothing on a good slide.
"""

from __future__ import annotations

import struct
from pathlib import Path

_MAX_IFDS = 256  # a pyramid has tens of directories; a loop in a corrupt chain stops here
_TYPE_SIZES = {3: 2, 4: 4, 16: 8}  # SHORT, LONG, LONG8: the types offsets and counts use
_DATA_TAGS = ((273, 279), (324, 325))  # (StripOffsets, StripByteCounts), (TileOffsets, ...)


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` cannot be read at all (empty, permission), or None when its bytes can."""
    try:
        with path.open("rb") as fh:
            head = fh.read(1)
    except PermissionError:
        return "permission denied: this user may not read the file (check its owner and mode)"
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or exc})"
    if not head:
        return "the file is empty (0 bytes): an interrupted copy? copy it again from the scanner"
    return None


def tiff_truncation(path: Path) -> str | None:
    """A sentence saying that ``path`` is a TIFF cut short, or None (not a TIFF, or whole).

    Walks the directory chain of a classic or BigTIFF file and checks that every directory and
    every strip or tile it lists lies inside the file.
    """
    try:
        with path.open("rb") as fh:
            return _walk(fh, path.stat().st_size)
    except (OSError, struct.error, ValueError):
        return None


def _walk(fh: object, size: int) -> str | None:
    read = fh.read  # type: ignore[attr-defined]
    seek = fh.seek  # type: ignore[attr-defined]
    head = read(16)
    if head[:2] not in (b"II", b"MM"):
        return None
    order = "<" if head[:2] == b"II" else ">"
    magic = struct.unpack(order + "H", head[2:4])[0]
    if magic == 42:
        big, offset = False, struct.unpack(order + "I", head[4:8])[0]
    elif magic == 43:
        big, offset = True, struct.unpack(order + "Q", head[8:16])[0]
    else:
        return None
    count_fmt, entry_size, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    word = 8 if big else 4
    seen: set[int] = set()
    while offset and offset not in seen and len(seen) < _MAX_IFDS:
        seen.add(offset)
        if offset >= size:
            return _cut(size, offset)
        seek(offset)
        count_bytes = struct.calcsize(count_fmt)
        (n,) = struct.unpack(order + count_fmt, read(count_bytes))
        end = offset + count_bytes + n * entry_size + struct.calcsize(next_fmt)
        if end > size:
            return _cut(size, end)
        entries = read(n * entry_size)
        (next_offset,) = struct.unpack(order + next_fmt, read(struct.calcsize(next_fmt)))
        tags: dict[int, tuple[int, int, bytes]] = {}
        for i in range(n):
            raw = entries[i * entry_size : (i + 1) * entry_size]
            tag, typ = struct.unpack(order + "HH", raw[:4])
            (cnt,) = struct.unpack(order + ("Q" if big else "I"), raw[4 : 4 + word])
            tags[tag] = (typ, cnt, raw[4 + word :])
        for offsets_tag, counts_tag in _DATA_TAGS:
            if offsets_tag in tags and counts_tag in tags:
                last = _data_end(fh, order, big, size, tags[offsets_tag], tags[counts_tag])
                if last is not None and last > size:
                    return _cut(size, last)
        offset = next_offset
    return None


def _values(
    fh: object, order: str, big: bool, size: int, entry: tuple[int, int, bytes]
) -> list[int] | None:
    typ, count, field = entry
    width = _TYPE_SIZES.get(typ)
    if width is None:
        return None
    nbytes = width * count
    fmt = order + {2: "H", 4: "I", 8: "Q"}[width] * count
    if nbytes <= len(field):
        return list(struct.unpack(fmt, field[:nbytes]))
    (where,) = struct.unpack(order + ("Q" if big else "I"), field)
    if where + nbytes > size:
        return [where + nbytes]  # the array itself lies past the end
    fh.seek(where)  # type: ignore[attr-defined]
    return list(struct.unpack(fmt, fh.read(nbytes)))  # type: ignore[attr-defined]


def _data_end(
    fh: object,
    order: str,
    big: bool,
    size: int,
    offsets: tuple[int, int, bytes],
    counts: tuple[int, int, bytes],
) -> int | None:
    """The end of the furthest strip or tile (or of its offset array, if that is cut off)."""
    starts = _values(fh, order, big, size, offsets)
    lengths = _values(fh, order, big, size, counts)
    if not starts or not lengths:
        return None
    if len(starts) != len(lengths):
        return max(starts + lengths)  # an array cut off: its end is what lies past the file
    return max(s + n for s, n in zip(starts, lengths, strict=True))


def _cut(size: int, needed: int) -> str:
    return (
        f"the file is truncated: it ends at byte {size:,} but its TIFF structure refers to "
        f"byte {needed:,} (an interrupted copy or download?); copy it again from the scanner"
    )
