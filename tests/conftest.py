"""Shared test settings.

numba and torch each start a thread pool per process; on CI's 2 cores more threads only
add contention, so tests run with the pool sized to the machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", str(min(2, os.cpu_count() or 1)))
