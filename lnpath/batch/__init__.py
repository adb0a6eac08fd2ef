"""Many slides: a manifest scored on Dask (local, a scheduler, or SLURM) and the cohort table.

The only room that imports dask.
"""

from lnpath.batch.cluster import slurm_client
from lnpath.batch.cohort import cohort_pairs, cohort_table
from lnpath.batch.manifest import read_manifest
from lnpath.batch.run import score_batch

__all__ = ["cohort_pairs", "cohort_table", "read_manifest", "score_batch", "slurm_client"]
