"""Plot conventions every figure of the harness follows (leaderboard, demo, notebooks):

- a quality axis spans the metric's whole range ([0, 1] for accuracies and pass rates; from 0 for
  error rates such as WER, inverted so that up is better), never matplotlib's auto-scale, so two
  equal points never look apart and a small difference never looks large;
- speed and cost axes start at 0;
- point labels are placed so that they do not overlap (`label_points`);
- the title says n.
"""

from __future__ import annotations

import math

from harness import metrics

# metrics bounded by [0, 1]; anything else that is lower-is-better is an error rate from 0 upwards
UNIT_RANGE = ("accuracy", "quality", "pass@1", "exact_match", "f1", "rouge", "bleu", "strict_match",
              "flexible_match", "win_rate", "solved")


def quality_axis(ax, metric: str, direction: str = "higher", values=(), label: str | None = None) -> None:
    """Fix the quality axis to the metric's range (see the module docstring)."""
    lower = metrics.lower_is_better(direction)
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if lower:
        top = max([1.0, *[v * 1.05 for v in finite]])
        ax.set_ylim(0.0, top)
        ax.invert_yaxis()  # up is better
    else:
        top = 1.0 if all(v <= 1.0 for v in finite) else max(finite) * 1.05
        ax.set_ylim(-0.02 * top, top * 1.02)
    ax.set_ylabel(label or f"{metrics.quality_label(metric, direction)}")
    ax.grid(alpha=0.3)


def zero_based(ax, axis: str = "x", values=()) -> None:
    """A speed / cost axis from 0 to a little beyond the largest value."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    top = max(finite) * 1.25 if finite and max(finite) > 0 else 1.0
    (ax.set_xlim if axis == "x" else ax.set_ylim)(0, top)


def renderer_of(fig):
    """A renderer for measuring text boxes, whatever backend the figure was made under."""
    if not hasattr(fig.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    fig.canvas.draw()  # fixes the transforms
    return fig.canvas.get_renderer()


# candidate label offsets in points, tried in order until one does not overlap a placed label
_OFFSETS = [(6, 6), (6, -14), (6, 18), (6, -26), (-8, 6), (-8, -14), (6, 30), (6, -38), (-8, 18), (-8, -26),
            (6, 42), (6, -50)]


def label_points(ax, xs, ys, labels, fontsize: int = 8) -> list:
    """Annotate points without overlapping labels: each label takes the first offset (right-up,
    right-down, further up/down, then left) whose box meets no label placed before it. Returns the
    annotations (tests read their extents)."""
    fig = ax.figure
    renderer = renderer_of(fig)
    placed, out = [], []
    order = sorted(range(len(labels)), key=lambda i: (xs[i], ys[i]))
    for i in order:
        ann = None
        for dx, dy in _OFFSETS:
            if ann is not None:
                ann.remove()
            ann = ax.annotate(str(labels[i]), (xs[i], ys[i]), textcoords="offset points", xytext=(dx, dy),
                              fontsize=fontsize, ha="left" if dx >= 0 else "right")
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed):
                break
        placed.append(ann.get_window_extent(renderer))
        out.append(ann)
    return out
