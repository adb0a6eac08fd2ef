"""Imported only as a forkserver preload (:func:`lnpath.wsi.workers.worker_context`).

The forkserver outlives a main process killed by ``kill -9`` (and with it every worker it forked,
which die with *their* parent only); importing this module in the server makes the kernel end
it with the main process, and so its workers too.
"""

from lnpath.wsi.workers import die_with_parent

die_with_parent()
