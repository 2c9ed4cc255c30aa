"""The `gdzoo` figures: pure functions from a command's result to figures.

Each function returns a dict {file-name suffix: `matplotlib.figure.Figure`};
`output.save_figures` writes them as PNG at each figure's own dpi. The
object-oriented API (no pyplot) renders with Agg and leaves the caller's
matplotlib backend alone.
"""

import numpy as np

from keras_gdzoo.cli.init import RANGES


def _figure(width, height, dpi=110, layout="constrained"):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout=layout)


def _colors(count):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _draw_losses(ax, result, axis, colors):
    """Every run's training loss against epochs or seconds, on a log scale."""
    for label in result.labels:
        first = True
        for run in (r for r in result.runs if r.method == label and r.losses):
            x = np.arange(len(run.losses)) if axis == "epochs" else np.array(run.seconds)
            y = np.maximum(np.asarray(run.losses, dtype=float), 1e-12)
            ax.plot(x, y, color=colors[label], alpha=0.7, linewidth=1.2,
                    label=label if first else None)
            first = False
    if result.goal is not None:
        ax.axhline(result.goal, color="black", linestyle="--", linewidth=1,
                   label=f"goal {result.goal:g}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch" if axis == "epochs" else "seconds (tracing excluded)")
    ax.set_ylabel(f"training loss ({result.problem.loss})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


def compare(result):
    """Loss vs epochs, loss vs seconds, and both side by side."""
    colors = dict(zip(result.labels, _colors(len(result.labels))))
    description = result.problem.description
    figures = {}
    for axis in ("epochs", "seconds"):
        fig = _figure(6.5, 4.5)
        ax = fig.add_subplot()
        _draw_losses(ax, result, axis, colors)
        ax.set_title(f"{description}\nloss vs {axis}", fontsize="medium")
        figures[f"-loss-vs-{axis}"] = fig
    fig = _figure(12, 4.5)
    for index, axis in enumerate(("epochs", "seconds")):
        _draw_losses(fig.add_subplot(1, 2, index + 1), result, axis, colors)
    fig.suptitle(description, fontsize="medium")
    figures[""] = fig
    return figures


def trajectories(result):
    """The surface's contours with each method's path."""
    surface = result.surface
    fig = _figure(7, 6)
    ax = fig.add_subplot()
    xs = np.linspace(*surface.xlim, 300)
    ys = np.linspace(*surface.ylim, 300)
    values = surface.function(np.stack(np.meshgrid(xs, ys)))
    if surface.log_levels:  # geometric levels, dense near the minimum
        low = max(float(values.min()), 1e-3)
        high = float(np.quantile(values, 0.9))
        levels = np.logspace(np.log10(low), np.log10(high), 30)
    else:
        levels = 30
    ax.contour(xs, ys, values, levels=levels, cmap="Greys", linewidths=0.6)
    for (label, trail), color in zip(result.paths.items(), _colors(len(result.paths))):
        ax.plot(trail[:, 0], trail[:, 1], "-o", color=color, markersize=2.5, linewidth=1.2,
                label=f"{label} ({len(trail) - 1} steps)")
    ax.plot(*surface.start, "ks", markersize=6, label="start")
    if surface.minimum is not None:
        ax.plot(*surface.minimum, "k*", markersize=12, label="minimum")
    ax.set_xlim(*surface.xlim)
    ax.set_ylim(*surface.ylim)
    ax.set_xlabel("w1")
    ax.set_ylabel("w2")
    ax.set_title(f"{result.function}: {surface.description}", fontsize="medium")
    ax.legend(fontsize="small", loc="best")
    return {"": fig}


def _histograms(result, kind, index):
    rows = result.statistics
    # A fixed grid (constrained layout is slow for many small axes).
    fig = _figure(1.7 * result.depth + 1, 1.6 * len(rows) + 0.8, dpi=90, layout=None)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.08, top=0.85, wspace=0.15, hspace=0.45)
    axes = fig.subplots(len(rows), result.depth, squeeze=False)
    # Bounded units on a fixed axis, so that vanishing shows.
    bounds = RANGES.get(result.activation) if kind == "activations" else None
    for row, (label, values) in enumerate(rows.items()):
        for layer, data in enumerate(values[index]):
            ax = axes[row, layer]
            counts, edges = np.histogram(data, bins=40, range=bounds)
            ax.stairs(counts, edges, fill=True, color=f"C{row}")
            ax.set_yticks([])
            ax.tick_params(labelsize=6)
            if row == 0:
                ax.set_title(f"layer {layer + 1}", fontsize="small")
            if layer == 0:
                ax.set_ylabel(label, fontsize="small")
    what = "activations y" if kind == "activations" else "gradients dL/dh"
    fig.suptitle(f"{what} per layer, {result.activation} units", fontsize="medium")
    return fig


def init(result):
    """Histograms of activations and of gradients per layer, and their variances."""
    figures = {f"-{kind}": _histograms(result, kind, index)
               for index, kind in enumerate(("activations", "gradients"))}
    fig = _figure(11, 4)
    for index, what in enumerate(("activation variance", "gradient variance")):
        ax = fig.add_subplot(1, 2, index + 1)
        for row, (label, values) in enumerate(result.statistics.items()):
            variances = [max(float(v.var()), 1e-30) for v in values[index]]
            ax.plot(range(1, result.depth + 1), variances, "-o", color=f"C{row}", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"information flow, {result.activation} units", fontsize="medium")
    figures["-variance"] = fig
    return figures
