"""PNG figures for the web pages (matplotlib's object API with the Agg canvas: no pyplot state,
safe in the API's worker threads)."""
from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence

QUARTILES = ("mse_q0", "mse_q1", "mse_q2", "mse_q3")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # heavy: only when a plot is drawn

    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: only when a plot is drawn

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _log_ticks(ax, values: Iterable[int]) -> None:
    """The evaluated values themselves as the ticks of a log x axis, no minor labels."""
    from matplotlib.ticker import NullLocator  # heavy: only when a plot is drawn

    ticks = sorted(values)
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())


def ci95(cell: Mapping) -> float:
    """Half-width of the 95% t-interval of a cell's mean over its seeds (0 for one seed)."""
    n = cell["n"]
    if n < 2:
        return 0.0
    from scipy.stats import t  # heavy: only when a plot is drawn

    return float(t.ppf(0.975, n - 1)) * cell["std"] / n ** 0.5


def _floor(ax, rows: Sequence[Mapping], x: str) -> None:
    """The rows' floor (held-out real images at the same N) as a dashed line."""
    pts = sorted((r[x], r["floor"]) for r in rows if r.get("floor") is not None)
    if pts:
        ax.plot([p for p, _ in pts], [f for _, f in pts], ls="--", color="black", lw=1, label="floor (real images)")


def metric_vs_steps(rows: Sequence[Mapping], columns: Sequence[str], *, metric: str, title: str) -> bytes:
    """The paper's Fig. 7b: metric vs sampling steps T, one line per weighting, whiskers = the 95%
    interval of the mean over seeds, the floor dashed. `rows` are leaderboard rows (dicts with
    num_steps, cells and floor)."""
    fig = _figure(4.8, 3.2)
    ax = fig.add_subplot()
    for w in columns:
        pts = sorted((r["num_steps"], r["cells"][w]) for r in rows if w in r["cells"])
        if not pts:
            continue
        ts = [t for t, _ in pts]
        ax.errorbar(ts, [c["mean"] for _, c in pts], yerr=[ci95(c) for _, c in pts], marker="o", ms=4, capsize=3, label=w)
    _floor(ax, rows, "num_steps")
    ax.set_xscale("log")
    _log_ticks(ax, {r["num_steps"] for r in rows})
    ax.set_xlabel("sampling steps T")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if columns:
        ax.legend(fontsize=8)
    return _png(fig)


def metric_vs_training(rows: Sequence[Mapping], columns: Sequence[str], *, metric: str, title: str) -> bytes:
    """The paper's Fig. 7a: metric vs training steps (the checkpoints of `evaluation.at_steps` and
    the final one), one panel per sampling budget T, one line per weighting, whiskers = the 95%
    interval of the mean over seeds, the floor dashed. `rows` are leaderboard rows of one metric
    with `train_step` (train_steps=all)."""
    ts = sorted({r["num_steps"] for r in rows}) or [0]
    fig = _figure(3.0 * len(ts) + 0.6, 3.0)
    for i, T in enumerate(ts):
        ax = fig.add_subplot(1, len(ts), i + 1)
        for w in columns:
            pts = sorted(((r["train_step"], r["cells"][w]) for r in rows if r["num_steps"] == T and w in r["cells"]),
                         key=lambda p: p[0])
            if pts:
                ax.errorbar([s for s, _ in pts], [c["mean"] for _, c in pts], yerr=[ci95(c) for _, c in pts],
                            marker="o", ms=3, capsize=2, label=w, lw=1.2)
        _floor(ax, [r for r in rows if r["num_steps"] == T], "train_step")
        ax.set_xscale("log")
        _log_ticks(ax, {r["train_step"] for r in rows if r["num_steps"] == T})
        ax.set_title(f"T = {T}", fontsize=9)
        ax.set_xlabel("training steps", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
        if i == 0:
            ax.set_ylabel(metric, fontsize=8)
    if columns and rows:
        fig.axes[-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def loss_by_quartile(series: Mapping[str, Iterable[Mapping]], *, title: str = "") -> bytes:
    """Training MSE by timestep quartile (mse_q0..mse_q3) vs step; one panel per series
    (a run, or a weighting). Each series is a list of metrics points {step, values}."""
    items = list(series.items()) or [("no metrics yet", [])]
    n = len(items)
    cols = min(n, 4)
    nrows = (n + cols - 1) // cols
    fig = _figure(3.4 * cols, 2.7 * nrows)
    for i, (label, points) in enumerate(items):
        ax = fig.add_subplot(nrows, cols, i + 1)
        points = sorted(points, key=lambda p: p["step"])
        for q in QUARTILES:
            xs = [p["step"] for p in points if q in p["values"]]
            ys = [p["values"][q] for p in points if q in p["values"]]
            if xs:
                ax.plot(xs, ys, label=q.replace("mse_", ""), lw=1.2)
        ax.set_yscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if i == 0 and points:
            ax.legend(fontsize=7, title="MSE by t quartile", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _png(fig)
