"""Plots shared by the demo and replay (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write as PNG (90 dpi) and close a figure; returns `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    pyplot().close(fig)
    return path


@dataclass(frozen=True)
class JointSeries:
    """One line per joint panel: `values` (T, n) in the columns of the joint names passed to plot_joint_series,
    NaN where a joint has no value. `style` goes to matplotlib's plot()."""

    label: str
    times: np.ndarray
    values: np.ndarray
    style: dict = field(default_factory=dict)


def plot_joint_series(path: Path, names: Sequence[str], series: Sequence[JointSeries], xlabel: str,
                      extra: dict[int, Sequence[JointSeries]] | None = None) -> Path:
    """A grid with one panel per joint; `extra` adds per-joint series (panel index -> series with 1-D values)."""
    plt = pyplot()
    columns = 2 if len(names) <= 8 else 4
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 2.2 * rows), sharex=True, squeeze=False)
    for j, name in enumerate(names):
        ax = axes.flat[j]
        for s in series:
            ax.plot(s.times, s.values[:, j], label=s.label, **s.style)
        for s in (extra or {}).get(j, ()):
            ax.plot(s.times, s.values, label=s.label, **s.style)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel(xlabel, fontsize=8)
    return save_figure(fig, path)
