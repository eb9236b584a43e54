"""The benchmarks' pictures (matplotlib, Agg backend: no display needed).

    busbw(rows, path)                 bus bandwidth against message size, one line per algorithm,
                                      and each one's speed against MPI's below
    predicted_vs_measured(t, path)    bench.tune: the fitted formulas against the measurements
    schedule_diagram(s, path)         bench.explain: ranks as rows, steps as columns, messages as arrows
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402


def size_label(size, _position=None):
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:g}{unit}" if value == int(value) else f"{value:.3g}{unit}"
    return f"{size:g}"


def _size_axis(axis):
    axis.set_xscale("log", base=2)
    axis.xaxis.set_major_formatter(FuncFormatter(size_label))
    axis.set_xlabel("message size (bytes)")
    axis.grid(True, which="major", alpha=0.3)


def _colors(names):
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(names)}


def busbw(rows, path, title=""):
    """Bus bandwidth (GB/s) against size (log scale) for every algorithm in the harness rows;
    out-of-place and in-place side by side where both were measured. Below, where an MPI
    row was measured, each other row's speed against it (MPI's time over its time, log
    scale: above 1 is faster than MPI) against MPI called straight from mpi4py where that
    row is there, else through our communicator ("mpi")."""
    names = list(dict.fromkeys(row["algorithm"] for row in rows))
    modes = [(prefix, label) for prefix, label in (("", "out-of-place"), ("inplace_", "in-place"))
             if any(row.get(prefix + "busbw") is not None for row in rows)]
    reference = next((name for name in ("mpi4py", "mpi") if name in names), None)
    panels = 2 if reference else 1
    figure, axes = plt.subplots(panels, len(modes), figsize=(6.5 * len(modes), 4.5 * panels), squeeze=False,
                                sharey="row")
    colors = _colors(names)
    for column, (prefix, label) in enumerate(modes):
        axis = axes[0][column]
        for name in names:
            mine = [row for row in rows if row["algorithm"] == name and row.get(prefix + "busbw") is not None]
            axis.plot([row["size"] for row in mine], [row[prefix + "busbw"] for row in mine],
                      marker="o", markersize=3, label=name, color=colors[name],
                      linestyle="--" if name in ("mpi", "mpi4py", "nccl") else "-")
        _size_axis(axis)
        axis.set_yscale("log")
        axis.set_title(label)
        if reference:
            _against(axes[1][column], rows, names, reference, prefix, colors)
    axes[0][0].set_ylabel("bus bandwidth (GB/s, log scale)")
    axes[0][-1].legend(loc="upper left", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _against(axis, rows, names, reference, prefix, colors):
    """Each row's speed against `reference`'s at the same size: its time over ours."""
    key = prefix + "time_us"
    theirs = {row["size"]: row[key] for row in rows if row["algorithm"] == reference and row.get(key)}
    for name in names:
        if name == reference:
            continue
        mine = [row for row in rows if row["algorithm"] == name and row.get(key) and row["size"] in theirs]
        axis.plot([row["size"] for row in mine], [theirs[row["size"]] / row[key] for row in mine],
                  marker="o", markersize=3, color=colors[name],
                  linestyle="--" if name in ("mpi", "mpi4py", "nccl") else "-")
    axis.axhline(1.0, color="black", linewidth=0.8)
    _size_axis(axis)
    axis.set_yscale("log", base=2)
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}x"))
    axis.set_ylabel(f"{reference}'s time / ours (log scale; above 1: faster than MPI)", fontsize=8)


def predicted_vs_measured(measured, predict, path, title=""):
    """measured: {collective: {"sizes": [...], "times": {algorithm: [seconds]}}};
    predict(collective, algorithm, size) -> seconds. One panel per collective: measured
    points, predicted lines (log-log)."""
    collectives = list(measured)
    figure, axes = plt.subplots(1, len(collectives), figsize=(5.2 * len(collectives), 4.3), squeeze=False)
    for axis, collective in zip(axes[0], collectives):
        table = measured[collective]
        colors = _colors(list(table["times"]))
        grid = np.geomspace(table["sizes"][0], table["sizes"][-1], 80)
        for name, times in table["times"].items():
            axis.plot(table["sizes"], np.array(times) * 1e6, "o", markersize=4, color=colors[name])
            axis.plot(grid, [predict(collective, name, s) * 1e6 for s in grid], "-", color=colors[name],
                      label=name, linewidth=1.2)
        _size_axis(axis)
        axis.set_yscale("log")
        axis.set_title(f"{collective}: predicted (lines) vs measured (dots)", fontsize=9)
        axis.set_ylabel("time (us)")
        axis.legend(fontsize=7, loc="upper left")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def schedule_diagram(schedule, path):
    """Ranks as rows, steps as columns: each cell shows the elements a rank holds after the
    step (colour: how many ranks' contributions), each arrow a message, labelled with the
    elements it carries."""
    n, count, steps = schedule.n, schedule.count, schedule.steps
    figure, axis = plt.subplots(figsize=(max(7.0, 1.6 + 1.35 * (steps + 1)), 1.1 + 0.75 * n))
    cmap = plt.get_cmap("viridis")
    cell_w, cell_h = 0.6, 0.42
    most = max(1, int(schedule.contributions(steps).max()))    # n when reducing, else 1
    for step in range(steps + 1):
        fraction = schedule.contributions(step) / most
        for rank in range(n):
            y = n - 1 - rank
            for i in range(count):
                axis.add_patch(plt.Rectangle((step - cell_w / 2 + i * cell_w / count, y - cell_h / 2),
                                             cell_w / count, cell_h, color=cmap(fraction[rank, i]),
                                             linewidth=0))
            axis.add_patch(plt.Rectangle((step - cell_w / 2, y - cell_h / 2), cell_w, cell_h,
                                         fill=False, linewidth=0.6, edgecolor="black"))
    for m in schedule.messages:
        start = (m.step - 1 + cell_w / 2, n - 1 - m.src)
        end = (m.step - cell_w / 2, n - 1 - m.dst)
        axis.annotate("", xy=end, xytext=start,
                      arrowprops={"arrowstyle": "->", "color": "crimson", "linewidth": 0.9,
                                  "shrinkA": 0, "shrinkB": 0})
        spans = []                    # the element ranges it carries, whatever they contain
        for a, b, _ in m.runs:
            if spans and spans[-1][1] == a:
                spans[-1][1] = b
            else:
                spans.append([a, b])
        label = ",".join(f"{a}:{b}" for a, b in spans)
        at = 0.22                     # near the sender, where arrows do not cross yet
        axis.text(start[0] + at * (end[0] - start[0]) + 0.02, start[1] + at * (end[1] - start[1]), label,
                  fontsize=6, ha="left", va="center", color="crimson")
    axis.set_xlim(-0.6, steps + 0.6)
    axis.set_ylim(-0.7, n - 0.3)
    axis.set_yticks(range(n))
    axis.set_yticklabels([f"rank {r}" for r in reversed(range(n))])
    axis.set_xticks(range(steps + 1))
    axis.set_xticklabels(["start"] + [f"step {s}" for s in range(1, steps + 1)], fontsize=8)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    bar = figure.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, most)), ax=axis,
                          fraction=0.025, pad=0.01)
    bar.set_label("ranks' contributions held", fontsize=8)
    bar.set_ticks(range(0, most + 1, max(1, most // 8)))
    axis.set_title(f"{schedule.algorithm} {schedule.collective}, {n} ranks, {count} elements\n"
                   "cells: a rank's elements, left to right; arrows: messages, labelled start:stop",
                   fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path
