"""A bounded CPU hog on every core: the "loaded machine" of `vla-ros bench ros-latency --load` and
`vla-ros demo --cpu-load` (another process busy on every core, as a policy server or a rosbag recorder sharing the
robot PC would be).

One busy-looping Python process per core at the default priority, started by the caller and killed when it is done;
each also stops by itself after `limit_s`, so a load is never left behind even if the caller dies.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

_BUSY_LOOP = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def cpu_load(workers: int | None = None, limit_s: float = 900.0) -> Iterator[list[subprocess.Popen]]:
    """Run `workers` busy loops (default: one per core) for the duration of the `with` block (at most limit_s)."""
    count = workers if workers is not None else os.cpu_count() or 1
    # -S: no site packages (no ROS .pth hook re-executing the interpreter): a bare loop, started in milliseconds
    hogs = [subprocess.Popen([sys.executable, "-S", "-c", _BUSY_LOOP.format(limit=float(limit_s))],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(count)]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait(timeout=5)
