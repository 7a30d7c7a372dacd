"""Progress bars for long commands (replay, evaluate, bench soak)."""

from __future__ import annotations

import sys


class Progress:
    """A tqdm bar on an interactive terminal; silent otherwise (logs, CI, pipes)."""

    def __init__(self, description: str, total: float = 1.0, unit: str = ""):
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            counts = " {n_fmt}/{total_fmt} " + unit if unit else " "
            self.bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr,
                            bar_format="{l_bar}{bar}|" + counts + "{elapsed}<{remaining}")

    def to(self, value: float) -> None:
        if self.bar is not None:
            self.bar.update(value - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
