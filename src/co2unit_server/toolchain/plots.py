"""The tiered CO2 and ping plots (matplotlib, SVG): one subplot or row per deployment group.

Series are binned in SQL to about one point of page width, so an SVG stays small however many
readings there are; only the window a plot shows is read from the database.
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything else of matplotlib: no display on a server

import numpy as np  # noqa: E402
from matplotlib import dates as mdates  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import PathPatch  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator  # noqa: E402

from ..core.files import write_atomic  # noqa: E402
from ..core.timestamps import DAY  # noqa: E402
from ..database import (
    db,  # noqa: E402
    plotdata,  # noqa: E402
)
from ..database.plotdata import CO2_RECENT, PINGS_ALL, Group, Period

WIDTH_IN = 11.0
LEFT_IN, RIGHT_IN = 1.5, 0.7
AXES_POINTS = (WIDTH_IN - LEFT_IN - RIGHT_IN) * 72
# Bins per series: about one per 1.5 points of page width, which keeps a 100-unit SVG < 2 MB.
BINS = int(AXES_POINTS / 1.5)
SUBPLOT_IN, PING_ROW_IN, HEADER_IN, FOOTER_IN = 0.85, 0.2, 0.75, 0.55
# Readings farther apart than this are not joined by a line.
GAP_SECONDS = 3 * 3600
TEMP_RANGE = (-15.0, 25.0)  # °C mapped blue .. grey .. red
TEMP_LEVELS = 7
TEMP_CMAP = LinearSegmentedColormap.from_list("blue_grey_red", ["#2b65c2", "#9a9a9a", "#cf3a2c"])
PING_CMAP = matplotlib.colormaps["viridis"].with_extremes(under="#b0b0b0", bad="#ffffff")
DBM_RANGE = (-113.0, -51.0)
# CO2 per unit of a group; no blue or red, which are the temperature's.
CO2_COLOURS = ("#1b7837", "#762a83", "#e08214", "#222222", "#8c510a")
# (line style, opacity) per deployment status; unknown statuses are drawn as deployed.
STYLES = {"deployed": ("-", 1.0), "en_route": ("--", 1.0), "lab_check": (":", 0.45)}
RC = {"svg.fonttype": "none", "svg.hashsalt": "co2unit", "font.size": 7,
      "axes.titlesize": 7, "xtick.labelsize": 6, "ytick.labelsize": 6, "axes.linewidth": 0.5}


@dataclass(frozen=True)
class PlotOptions:
    """The reference's plot options; times are epoch seconds (UTC)."""

    xmin: float | None = None
    xmax: float | None = None
    min_tier: int | None = None
    max_tier: int | None = None
    recent_days: float = 14.0
    co2_max: float | None = None


def _days(epoch: np.ndarray | float) -> np.ndarray | float:
    # Matplotlib's date unit: days since its epoch, 1970-01-01.
    return np.asarray(epoch) / DAY


def _series(rows: list[tuple], t0: float, width: float) -> tuple[np.ndarray, ...]:
    """Bin centres (date units), mean CO2 and mean temperature, NaN-broken at gaps."""
    if not rows:
        return np.empty(0), np.empty(0), np.empty(0)
    data = np.array(rows, dtype=float)
    index = data[:, 0].astype(int)
    bins, where = np.unique(index, return_inverse=True)
    sums = np.zeros((len(bins), 4))
    np.add.at(sums, where, data[:, 1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        co2 = np.where(sums[:, 1] > 0, sums[:, 0] / sums[:, 1], np.nan)
        temp = np.where(sums[:, 3] > 0, sums[:, 2] / sums[:, 3], np.nan)
    centres = t0 + (bins + 0.5) * width
    gaps = np.flatnonzero(np.diff(centres) > max(GAP_SECONDS, 2.5 * width)) + 1
    centres = np.insert(centres, gaps, np.nan)
    return _days(centres), np.insert(co2, gaps, np.nan), np.insert(temp, gaps, np.nan)


def _fill_path(x: np.ndarray, y: np.ndarray, base: float) -> MplPath | None:
    """One compound path filling under each unbroken run: N+2 vertices, not 2N."""
    vertices, codes = [], []
    ok = ~(np.isnan(x) | np.isnan(y))
    edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.astype(int), [0]))))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        xs, ys = x[start:stop], y[start:stop]
        vertices += [(xs[0], base), *zip(xs, ys, strict=True), (xs[-1], base), (xs[0], base)]
        codes += ([MplPath.MOVETO] + [MplPath.LINETO] * (len(xs) + 1) + [MplPath.CLOSEPOLY])
    return MplPath(vertices, codes) if vertices else None


def _temperature(ax2, x: np.ndarray, temp: np.ndarray, style: tuple[str, float]) -> None:
    """Temperature as a line coloured by value: one path per colour level, not per segment."""
    norm = Normalize(*TEMP_RANGE, clip=True)
    level = np.minimum((norm(temp).filled(np.nan) * TEMP_LEVELS), TEMP_LEVELS - 1)
    previous = np.concatenate(([np.nan], level[:-1]))
    for k in range(TEMP_LEVELS):
        # A segment is drawn in the colour of its first point.
        keep = (np.floor(level) == k) | (np.floor(previous) == k)
        if keep.any():
            ax2.plot(x, np.where(keep, temp, np.nan), lw=0.6, ls=style[0], alpha=style[1],
                     color=TEMP_CMAP((k + 0.5) / TEMP_LEVELS))


def _style(period: Period) -> tuple[str, float]:
    return STYLES.get(period.status or "deployed", STYLES["deployed"])


def _draw_co2_group(ax, conn: sqlite3.Connection, group: Group, lo: float, hi: float,
                    grid: tuple[float, float], opts: PlotOptions) -> None:
    ax2 = ax.twinx()
    units = group.units
    co2_seen, temp_seen = [], []
    for period in group.periods:
        span = period.clip(lo, hi)
        if span is None:
            continue
        x, co2, temp = _series(plotdata.co2_bins(conn, period.unit_id, *span, *grid), *grid)
        if not len(x):
            continue
        co2_seen.append(co2)
        temp_seen.append(temp)
        style = _style(period)
        colour = CO2_COLOURS[units.index(period.nickname or period.unit_id) % len(CO2_COLOURS)]
        marker = "." if np.count_nonzero(~np.isnan(co2)) < 2 else None
        ax.plot(x, co2, lw=0.6, ls=style[0], alpha=style[1], color=colour, marker=marker, ms=2)
        path = _fill_path(x, co2, 0.0)
        if path is not None:
            # add_artist, not add_patch: limits are set below, and add_patch's limit update
            # of a long path is slow.
            ax.add_artist(PathPatch(path, facecolor=colour, alpha=0.13 * style[1], lw=0,
                                    transform=ax.transData, clip_path=ax.patch))
        _temperature(ax2, x, temp, style)
    # Limits set here, not by autoscaling: autoscaling 100 subplots costs seconds.
    ax.set_ylim(0, opts.co2_max or _top(co2_seen, 1000.0))
    ax2.set_ylim(*_span(temp_seen, TEMP_RANGE))
    for axis in (ax, ax2):
        axis.yaxis.set_major_locator(FixedLocator(_end_ticks(*axis.get_ylim())))
    tier = "" if group.tier is None else f"tier {group.tier}: "
    # A text, not a title: title placement checks every other axes (quadratic).
    ax.text(0, 1.03, f"{tier}{group.label} — {', '.join(units)}", transform=ax.transAxes,
            va="bottom")


def _end_ticks(lo: float, hi: float) -> list[float]:
    """The lowest and highest round tick in [lo, hi]: with 200 axes, tick objects are slow."""
    ticks = [t for t in MaxNLocator(3).tick_values(lo, hi) if lo <= t <= hi]
    return ticks[:1] + ticks[-1:] if len(ticks) > 1 else ticks


def _top(values: list[np.ndarray], default: float) -> float:
    finite = [v[np.isfinite(v)] for v in values]
    top = max((v.max() for v in finite if len(v)), default=np.nan)
    return float(top) * 1.08 if np.isfinite(top) and top > 0 else default


def _span(values: list[np.ndarray], default: tuple[float, float]) -> tuple[float, float]:
    finite = np.concatenate([v[np.isfinite(v)] for v in values] or [np.empty(0)])
    if not len(finite):
        return default
    lo, hi = float(finite.min()), float(finite.max())
    margin = max((hi - lo) * 0.08, 0.5)
    return lo - margin, hi + margin


def _figure(rows_in: float) -> Figure:
    height = HEADER_IN + FOOTER_IN + rows_in
    fig = Figure(figsize=(WIDTH_IN, height))
    fig.subplots_adjust(left=LEFT_IN / WIDTH_IN, right=1 - RIGHT_IN / WIDTH_IN,
                        top=1 - HEADER_IN / height, bottom=FOOTER_IN / height, hspace=0.45)
    return fig


def _title(fig: Figure, title: str) -> None:
    fig.suptitle(title, x=0.01, y=1 - 0.12 / fig.get_figheight(), ha="left", va="top")


def _empty(title: str, message: str) -> Figure:
    fig = _figure(1.5)
    _title(fig, title)
    fig.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _date_axis(ax, lo: float, hi: float) -> None:
    locator = mdates.AutoDateLocator(maxticks=12)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlim(_days(lo), _days(hi))


def _share_dates(axes: list, lo: float, hi: float) -> None:
    """Date ticks on the bottom axes, the same ticks as grid lines above (no sharex: slow)."""
    _date_axis(axes[-1], lo, hi)
    ticks = [t for t in axes[-1].get_xticks() if _days(lo) <= t <= _days(hi)]
    for ax in axes[:-1]:
        ax.set_xlim(_days(lo), _days(hi))
        # Grid lines as one collection: tick objects on 100 axes cost seconds.
        ax.xaxis.set_major_locator(NullLocator())
        ax.vlines(ticks, 0, 1, transform=ax.get_xaxis_transform(), lw=0.3, color="#dddddd")


def co2_figure(conn: sqlite3.Connection, groups: list[Group], lo: float, hi: float,
               title: str, opts: PlotOptions) -> Figure:
    """One subplot per group over [lo, hi): mean CO2 (left axis) and temperature (right)."""
    groups = [g for g in groups if any(p.clip(lo, hi) for p in g.periods)]
    if not groups or hi <= lo:
        return _empty(title, "No readings in this range yet.")
    grid = plotdata.bin_grid(lo, hi, BINS)
    fig = _figure(SUBPLOT_IN * len(groups))
    axes = list(fig.subplots(len(groups), 1, squeeze=False)[:, 0])
    for ax, group in zip(axes, groups, strict=True):
        _draw_co2_group(ax, conn, group, lo, hi, grid, opts)
    _share_dates(axes, lo, hi)
    _title(fig, title)
    fig.text(0.01, 1 - 0.45 / fig.get_figheight(),
             "left axis, thin line with fill: CO2 ppm, mean of the 10 readings (0 and 200010 "
             "left out); right axis: temperature °C, blue cold .. red warm (85.0 left out); "
             "solid deployed, dashed en route, dotted lab check; UTC", fontsize=6)
    return fig


def pings_figure(conn: sqlite3.Connection, groups: list[Group], lo: float, hi: float,
                 title: str) -> Figure:
    """One row per group; each bin coloured by the best signal (dBm) of its pings."""
    if not groups or hi <= lo:
        return _empty(title, "No pings yet.")
    width = (hi - lo) / BINS
    image = np.full((len(groups), BINS), np.nan)
    for row, group in enumerate(groups):
        for period in group.periods:
            span = period.clip(lo, hi)
            found = plotdata.ping_bins(conn, period.unit_id, *span, lo, width) if span else []
            for i, dbm, _ in found:
                # A ping without a measured signal shows as grey (below the colour scale).
                value = DBM_RANGE[0] - 1 if dbm is None else dbm
                col = min(i, BINS - 1)
                image[row, col] = np.fmax(image[row, col], value)
    fig = _figure(PING_ROW_IN * len(groups))
    ax = fig.subplots()
    shown = ax.imshow(np.ma.masked_invalid(image), aspect="auto", interpolation="none",
                      cmap=PING_CMAP, vmin=DBM_RANGE[0], vmax=DBM_RANGE[1],
                      extent=(_days(lo), _days(hi), len(groups) - 0.5, -0.5))
    ax.set_yticks(range(len(groups)),
                  [("" if g.tier is None else f"{g.tier}: ") + g.label for g in groups])
    _date_axis(ax, lo, hi)
    colorbar = fig.colorbar(shown, ax=ax, pad=0.01, fraction=0.02, extend="min")
    colorbar.set_label("best dBm in the bin (grey: no signal reading)")
    _title(fig, title)
    return fig


_PATH_DATA = re.compile(r' d="([^"]*)"')


def _number(tenths: int) -> str:
    whole, part = divmod(abs(tenths), 10)
    text = (str(whole) if whole else "") + (f".{part}" if part else "")
    return ("-" if tenths < 0 else "") + (text or "0")


# Most steps are small: formatting them once saves a second per figure.
_SMALL = {t: _number(t) for t in range(-3000, 3001)}


def _fmt(tenths: int) -> str:
    return _SMALL.get(tenths) or _number(tenths)


def _compact_subpath(tokens: list[str]) -> str | None:
    """Moves and lines as in matplotlib's output, or None for anything else (curves)."""
    commands = tokens[0::3]
    if len(tokens) % 3 or not set(commands) <= {"M", "L"}:
        return None
    # Rounded absolute positions first, then differences: no drift along the path.
    xs = np.rint(np.array(tokens[1::3], dtype=float) * 10).astype(np.int64)
    ys = np.rint(np.array(tokens[2::3], dtype=float) * 10).astype(np.int64)
    dxs, dys = np.diff(xs, prepend=xs[:1]).tolist(), np.diff(ys, prepend=ys[:1]).tolist()
    out = []
    for command, x, y, dx, dy in zip(commands, xs.tolist(), ys.tolist(), dxs, dys, strict=True):
        if command == "M":
            out.append(f"M{_fmt(x)} {_fmt(y)}")
        else:
            step = _fmt(dy)
            out.append(f"l{_fmt(dx)}{step if step[0] == '-' else ' ' + step}")
    return "".join(out)


def compact_path(data: str) -> str:
    """Path data of moves and lines as relative steps to 0.1 pt (about half the bytes)."""
    parts = []
    for part in data.split("z"):  # every closed subpath starts again with an absolute move
        tokens = part.split()
        compact = _compact_subpath(tokens) if tokens else ""
        if compact is None:
            return data  # curves (markers): left as matplotlib wrote them
        parts.append(compact)
    return "z".join(parts)


def save_svg(fig: Figure, path: Path) -> None:
    """Write the figure as SVG with compacted path data."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    write_atomic(path, _PATH_DATA.sub(lambda m: f' d="{compact_path(m.group(1))}"',
                                      buffer.getvalue()))


def _range(extent: tuple[float, float] | None, opts: PlotOptions) -> tuple[float, float]:
    """The data's time range, or the options'; empty (lo == hi) when there is no data."""
    lo, hi = extent or (0.0, -1.0)
    lo = opts.xmin if opts.xmin is not None else lo
    hi = opts.xmax if opts.xmax is not None else hi + 1
    return lo, hi


def make_plot(conn: sqlite3.Connection, name: str, pub_dir: Path, opts: PlotOptions,
              now: float | None = None) -> None:
    """Draw one of plotdata.PLOT_OUTPUTS into pub_dir."""
    now = time.time() if now is None else now
    stamp = f"(times in UTC; generated {plotdata.to_text(now)} UTC)"
    all_periods = plotdata.periods(conn)
    with matplotlib.rc_context(RC):
        if name == PINGS_ALL:
            groups = plotdata.groups(all_periods, plotdata.ping_units(conn), opts.min_tier,
                                     opts.max_tier)
            lo, hi = _range(plotdata.pings_extent(conn), opts)
            fig = pings_figure(conn, groups, lo, hi, f"Alive pings by deployment {stamp}")
        else:
            units = plotdata.reading_units(conn)
            groups = plotdata.groups(all_periods, units, opts.min_tier, opts.max_tier)
            if name == CO2_RECENT:
                hi = opts.xmax if opts.xmax is not None else now
                lo = hi - opts.recent_days * DAY
                title = f"CO2 and temperature, last {opts.recent_days:g} days {stamp}"
            else:
                lo, hi = _range(plotdata.readings_extent(conn, units), opts)
                title = f"CO2 and temperature, all data {stamp}"
            fig = co2_figure(conn, groups, lo, hi, title, opts)
        save_svg(fig, pub_dir / name)


def make_plots(db_path: Path, names: list[str], pub_dir: Path, opts: PlotOptions,
               now: float | None = None) -> None:
    """Draw several plots, in parallel processes when there is more than one."""
    if len(names) <= 1:
        for name in names:
            _plot_from(db_path, name, pub_dir, opts, now)
        return
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    # Forked workers reuse the imported matplotlib; each opens its own connection.
    with ProcessPoolExecutor(min(len(names), os.cpu_count() or 1),
                             mp_context=get_context("fork")) as pool:
        futures = [pool.submit(_plot_from, db_path, n, pub_dir, opts, now) for n in names]
        for future in futures:
            future.result()


def _plot_from(db_path: Path, name: str, pub_dir: Path, opts: PlotOptions,
               now: float | None) -> None:
    conn = db.connect(db_path)
    try:
        make_plot(conn, name, pub_dir, opts, now)
    finally:
        conn.close()
