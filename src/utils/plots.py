"""Figures for evaluation reports. Functions build and return Figures; the caller decides where they go.

Figures are drawn on the Agg canvas and never registered with pyplot, so no GUI backend is touched
and nothing stays open between calls.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from src.utils.io import atomic_write_bytes

FIGURE_INCHES = (8, 5)
FIGURE_DPI = 100  # 8x5 inches at 100 dpi -> an 800x500 PNG


def horizon_plot(curves: dict[str, Sequence[float]], ylabel: str, title: str, log_y: bool = False) -> Figure:
    """One labelled line per curve; value i of a curve is plotted at horizon step i + 1."""
    fig = Figure(figsize=FIGURE_INCHES, dpi=FIGURE_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, values in curves.items():
        steps = range(1, len(values) + 1)
        ax.plot(steps, list(values), marker="o", markersize=3, label=label)
    ax.set_xlabel("steps ahead (open loop)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write `fig` as a PNG at its own size and dpi, atomically, then release it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    atomic_write_bytes(path, buffer.getvalue())
    if "matplotlib.pyplot" in sys.modules:  # a caller's plt.subplots() figure would otherwise stay open
        sys.modules["matplotlib.pyplot"].close(fig)
    fig.clear()
