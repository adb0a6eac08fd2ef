"""Freed memory is kept for reuse, so repeated large allocations stop faulting pages in."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# In a fresh process: keep freed memory (or not); then how many MB a 64 MB block takes from a
# fresh mmap, and the page faults of reallocating it.
PROBE = """
import sys
from lnpath.core.memory import keep_freed_memory
from tests.test_memory import faults_of_reallocating, mmapped_mb_of_holding
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
print(kept, mmapped_mb_of_holding(64), faults_of_reallocating(blocks=1, block_mb=64))
"""

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


def _probe(mode: str, **env: str) -> tuple[str, int, int]:
    clean = {
        k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1]), int(out[2])


@glibc
def test_kept_memory_is_reused_without_page_faults() -> None:
    kept, mmapped_mb, faults = _probe("keep")
    _, default_mmapped_mb, _ = _probe("default")
    assert kept == "True"
    assert mmapped_mb == 0  # served from the heap, which keeps it after the free
    assert default_mmapped_mb >= 64  # above glibc's dynamic ceiling: a fresh mapping each time
    # Reused heap pages fault ~0 times; a fresh mapping each round 132 (huge pages) to 65,536
    # times, so this alone would not tell them apart on every kernel: the mapping check does.
    assert faults < 1000


@glibc
def test_a_users_own_malloc_settings_are_left_alone() -> None:
    kept, *_ = _probe("keep", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072")
    assert kept == "False"
    kept, *_ = _probe("keep", MALLOC_ARENA_MAX="2")
    assert kept == "False"
    kept, *_ = _probe("keep", GLIBC_TUNABLES="glibc.cpu.x86_shstk=off")  # not about malloc
    assert kept == "True"


@glibc
def test_it_can_be_turned_off() -> None:
    """Counted in mapped memory, not in page faults: how many a fresh mapping costs depends on
    whether the kernel backs it with huge pages (132 or 2,176 faults for the same probe)."""
    kept, mmapped_mb, _ = _probe("keep", LNPATH_KEEP_FREED_MEMORY="0")
    assert kept == "False"
    assert mmapped_mb >= 64


def mmapped_mb_of_holding(block_mb: int) -> int:
    """MB that glibc maps afresh (rather than taking from its heap) to hold one ``block_mb``
    block: mallinfo2's ``hblkhd`` before and while the block is alive."""
    import ctypes

    import numpy as np

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in [
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            ]
        ]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2  # glibc >= 2.33
    before = libc.mallinfo2().hblkhd
    block = np.ones(block_mb << 17)
    during = libc.mallinfo2().hblkhd
    del block
    return (during - before) >> 20


def faults_of_reallocating(blocks: int = 64, block_mb: int = 1, rounds: int = 4) -> int:
    """Page faults of allocating, touching and freeing ``blocks`` blocks of ``block_mb`` MB,
    ``rounds`` times after one warm-up round. One 64 MB block: above glibc's dynamic mmap ceiling
    (a fresh mapping each round by default). 1 MB blocks: below the 2 MB of a huge page, so none
    hides the faults of a fixed 128 KB threshold."""
    import resource

    import numpy as np

    total = 0
    for i in range(rounds + 1):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        arrays = [np.ones(block_mb << 17) for _ in range(blocks)]  # float64: every page written
        del arrays
        total += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) if i else 0
    return total


def _in_worker() -> tuple[str | None, int, bool, int]:
    from lnpath.batch.cluster import keep_freed_memory_in_worker

    before = faults_of_reallocating()
    kept = keep_freed_memory_in_worker()
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), before, kept, faults_of_reallocating()


@glibc
def test_a_dask_worker_keeps_freed_memory_despite_the_nannys_default() -> None:
    """The nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536; lnpath's task overrides it."""
    pytest.importorskip("distributed")
    from lnpath.batch.cluster import dask_client

    with dask_client(None, 1) as client:
        env, before, kept, after = client.submit(_in_worker, pure=False).result(timeout=120)
    assert env == "65536"
    assert kept
    assert before > 10_000  # 4 x 64 x 256 pages: each block a fresh mmap under that setting
    assert after < before / 10  # a worker's thread has its own arena: some faults remain
