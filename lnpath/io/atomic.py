"""Atomic file and folder writes: a reader never sees a half-written output."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lnpath.core.errors import InputError, OutputError, one_line


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_failure(exc: BaseException) -> bool:
    """A failed system call while writing (disk full, quota, file too large, read-only, ...).

    An OSError without an errno (PIL's "image file is truncated") is about an input, not the
    write, and is left to its own handler.
    """
    if isinstance(exc, OutputError | shutil.Error):
        return True
    return isinstance(exc, OSError) and exc.errno is not None


def _reason(exc: BaseException) -> str:
    """The system's words for a failed write, without file names (shutil.Error lists each)."""
    if isinstance(exc, OutputError):
        return exc.reason
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        why = str(exc.args[0][0][-1]) if exc.args[0] else str(exc)
        match = re.match(r"\[Errno \d+\] ([^:]+)", why)
        return match.group(1) if match else one_line(why)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return one_line(str(exc))


def _failed(target: Path, exc: BaseException, existed: bool) -> OutputError:
    """One line for a write that was undone: what failed, and that nothing was lost."""
    reason = _reason(exc)
    kept = f"the existing {target.name} is unchanged" if existed else "nothing was written"
    return OutputError(f"{target}: cannot write ({reason}); {kept}", reason)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    Raises:
        OutputError: the write failed (disk full, ...); ``target`` is as it was, no temp left.
    """
    target = Path(target)
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _failed(target, exc, existed) from None
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.chmod(0o666 & ~_umask())  # mkstemp files are private; outputs are ordinary files
        yield tmp
        os.replace(tmp, target)
    except (OSError, OutputError) as exc:
        if not _write_failure(exc):
            raise
        raise _failed(target, exc, existed) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return write_text(target, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def link_tree(source: Path, target: Path) -> None:
    """Copy the write-once folder ``source`` to ``target`` as hard links where the file system
    allows (else byte copies).

    A result's revision snapshots are never written again, only replaced by a rename, so a link
    is as safe as a copy. Carrying them into each new revision then costs the same whatever the
    history's length: on a 100-glomerulus result a save at revision 45 copied 127 MB (0.38 s).
    """

    shutil.copytree(source, target, copy_function=_link_or_copy)


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another device, FAT, a link limit: copy instead
        shutil.copy2(src, dst)
    return dst


def carry_entry(source: Path, target: Path) -> None:
    """Carry a file, folder or symlink that a folder write does not own into the new folder, as
    it is (links stay links, files are hard-linked where allowed), so the swap loses nothing."""
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(source), str(target))


def _writable_parent(target: Path) -> None:
    """Refuse, before any work, an output whose parent cannot be created or written."""

    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{target}: {parent} is a file, not a folder")
    try:  # try it: permission bits say nothing for root or on /proc-like file systems
        os.rmdir(tempfile.mkdtemp(prefix=".lnpath-probe.", dir=parent))
    except OSError:
        raise InputError(f"{target}: cannot write in {parent}") from None


def outside_results(target: Path, including_itself: bool = False) -> None:
    """Refuse an output inside a biopsy's result folder (one holding ``result.json``), or that
    folder itself with ``including_itself``: lnpath's writers of a result replace its files
    under its lock and seal them, and anything else written there would replace a sealed file
    or travel with the result (a private key, say).

    Raises:
        InputError: naming the result folder.
    """
    target = Path(os.path.abspath(target))
    for folder in [target, *target.parents] if including_itself else target.parents:
        if (folder / "result.json").is_file():
            where = (
                "is a result folder" if folder == target else f"inside the result folder {folder}"
            )
            raise InputError(
                f"{target}: {where}, whose files only lnpath's review, confirm and addendum "
                "write; choose a path outside it"
            )


def check_output_file(target: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Check an output file path up front: not a folder, writable, existing only with overwrite.

    Raises:
        InputError: with one line naming the problem.
    """

    path = Path(os.path.abspath(target))
    if path.is_dir():
        raise InputError(f"{target}: is a folder; give a file name")
    outside_results(path)
    if path.exists() and not overwrite:
        raise InputError(
            f"{target}: file already exists (use --overwrite, or overwrite=True in Python, to "
            "replace it)"
        )
    _writable_parent(path)
    return path


def check_output_dir(
    target: str | os.PathLike[str], overwrite: bool = False, marker: str | None = None
) -> Path:
    """Check an output folder up front, so a run never fails only after all its work.

    An existing folder is replaced only with ``overwrite``, and, when ``marker`` names the file
    every such output holds (``result.json``, ``tiles.csv``), only if it is one of ours or empty:
    ``--overwrite`` pointed at the wrong folder must not delete someone's files.

    Raises:
        InputError: with one line naming the problem.
    """

    path = Path(os.path.abspath(target))
    if path.exists() and not path.is_dir():
        raise InputError(f"{target}: exists and is not a folder")
    outside_results(path)
    if path.is_dir():
        if not overwrite:
            raise InputError(
                f"{target}: output folder already exists (use --overwrite, or overwrite=True in "
                "Python, to replace it)"
            )
        if marker and any(path.iterdir()) and not (path / marker).is_file():
            raise InputError(
                f"{target}: not an lnpath output folder (no {marker}); refusing to replace it"
            )
    _writable_parent(path)
    return path


@contextlib.contextmanager
def atomic_dir(
    target: str | os.PathLike[str],
    overwrite: bool = False,
    marker: str | None = None,
    before_swap: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; move it into place only on success.

    An existing ``target`` is refused unless ``overwrite`` is true (see :func:`check_output_dir`),
    and then replaced only after the new folder is complete, so an interrupted run never destroys
    an earlier result. ``before_swap`` runs once the new folder is complete, just before it
    moves into place (e.g. to move a confirmed result aside rather than replace it).

    Raises:
        InputError: see :func:`check_output_dir`.
        OutputError: the write failed (disk full, ...); ``target`` is as it was, no temp left.
    """
    target = check_output_dir(target, overwrite, marker)
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise _failed(target, exc, existed) from None
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp folders are private; outputs are ordinary folders
        yield tmp
        if before_swap is not None:
            before_swap()
        _swap(tmp, target)
    except (OSError, OutputError) as exc:
        if not _write_failure(exc):
            raise
        raise _failed(target, exc, existed) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` onto ``target``; if the second rename fails, put the old back."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
