"""`leaderboards/<suite>.html`: one self-contained page (inline CSS and JS, charts as embedded PNGs).

Results first: the summary (a column per task, mean rank, cost), then a sortable table per task version with
the best cell per column and the †-marks of `harness.report.stats` (short column codes, what they stand for under
them); then per-task bar charts (the same codes on the x axis), accuracy against cost (latency per image from
`profiles.csv`, Pareto front marked) and, for backbones run over a grid of options (Vermouth's `t` × `stages`),
a heatmap per task; the provenance last, folded. Nothing on the page loads from the network.
"""

from __future__ import annotations

import base64
import io
import math
from html import escape

import numpy as np
import pandas as pd

from harness.report.leaderboard import (
    LEGEND,
    TIED_MARK,
    VERSIONS_NOTE,
    Leaderboard,
    Summary,
    TaskTable,
    _number,
    _short,
    higher_is_better,
    natural_key,
    read_profiles,
    select_profiles,
    summary,
    summary_notes,
    task_cell_text,
    task_scores,
    task_tables,
)

__all__ = ["read_profiles", "render_html"]  # read_profiles: its old home, kept for callers

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:1.2rem auto 2rem;
 max-width:1400px;padding:0 1rem;color:#1f2328;background:#fff;line-height:1.45}
h1{font-size:1.5rem;margin:0 0 .2rem}h2{font-size:1.2rem;margin-top:1.6rem;border-bottom:1px solid #d0d7de;
 padding-bottom:.3rem}h3{font-size:1.02rem;margin:1.3rem 0 .2rem}
.note{color:#57606a;font-size:.85rem;margin:.3rem 0}.notes p{margin:.15rem 0}
.wrap{overflow-x:auto;border:1px solid #d0d7de;border-radius:6px;max-width:100%}
table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{padding:.3rem .55rem;border-bottom:1px solid #eaeef2;text-align:right;white-space:nowrap}
th{background:#f6f8fa;position:sticky;top:0;cursor:pointer;user-select:none;vertical-align:bottom;
 font-weight:600;white-space:normal}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;background:#fff;z-index:1;white-space:normal}
td:first-child{min-width:12rem}
th:first-child{background:#f6f8fa;z-index:2}
th .sub,th .detail{display:block;color:#57606a;font-weight:400;font-size:.75rem}
th .code{display:block;color:#0969da}
th[data-dir=asc]::after{content:" ▲"}th[data-dir=desc]::after{content:" ▼"}
tbody tr:nth-child(even) td{background:#fafbfc}tbody tr:hover td{background:#f1f8ff}
td.best{font-weight:700;background:#dafbe1 !important}td.tied{background:#f4fdf6}
td .n{color:#8c959f;font-size:.75rem;margin-left:.2rem}td.missing{color:#bbb}td.partial{color:#6e7781}
table.summary td.rank{font-weight:600}table.summary th.cost,table.summary td.cost{color:#57606a}
.random{color:#9a6700;font-size:.8rem}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.charts figure{margin:0;border:1px solid #d0d7de;
 border-radius:6px;padding:.5rem;background:#fff;max-width:100%}.charts img{max-width:100%;height:auto;display:block}
figcaption{font-size:.8rem;color:#57606a;margin-top:.3rem;max-width:60rem}
details.prov{margin-top:2rem;border:1px solid #d0d7de;border-radius:6px;padding:.4rem .8rem}
details.prov summary{cursor:pointer;font-weight:600}
table.prov{width:auto;margin:.5rem 0}table.prov td,table.prov th{text-align:left;cursor:default;position:static}
code{background:#f6f8fa;padding:0 .25rem;border-radius:4px;font-size:.85em}
"""

JS = """
document.querySelectorAll('table.lb').forEach(function(table){
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function(th, i){
    th.addEventListener('click', function(){
      var dir = th.dataset.dir === 'desc' ? 'asc' : 'desc';
      Array.prototype.forEach.call(heads, function(h){ delete h.dataset.dir; });
      th.dataset.dir = dir;
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var key = function(r){
        var c = r.cells[i], v = c.getAttribute('data-v');
        if (v === null) return c.textContent.trim().toLowerCase();
        return v === '' ? null : parseFloat(v);
      };
      rows.sort(function(a, b){
        var x = key(a), y = key(b);
        if (x === null && y === null) return 0;
        if (x === null) return 1;
        if (y === null) return -1;
        var s = (typeof x === 'number') ? x - y : (x < y ? -1 : x > y ? 1 : 0);
        return dir === 'asc' ? s : -s;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3, "axes.axisbelow": True})
    return plt


def _colors(backbones: list[str]) -> dict[str, tuple]:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if len(backbones) <= 10 else "tab20")
    return {b: cmap(i % cmap.N) for i, b in enumerate(backbones)}


def _backbone_order(lb: Leaderboard, s: Summary | None = None) -> list[str]:
    """The summary's order (by mean rank), then any backbone it lacks: charts and tables list backbones alike."""
    s = s or summary(lb)
    rest = sorted(set(lb.long["backbone"]) - set(s.rows), key=natural_key) if not lb.long.empty else []
    return [*s.rows, *rest]


def task_bar_charts(lb: Leaderboard, tables: list[TaskTable] | None = None,
                    order: list[str] | None = None) -> list[tuple[str, str]]:
    """One grouped bar chart per task version: a group per column (x labels: the tables' short codes, explained in
    the caption), a bar per backbone, std as error bars."""
    if lb.long.empty:
        return []
    order = order or _backbone_order(lb)
    tables = tables if tables is not None else task_tables(lb, order=order)
    plt = _plt()
    colors = _colors(order)
    charts = []
    for t in tables:
        present = [b for b in order if b in t.rows]
        n_cols = len(t.columns)
        width = 0.8 / max(len(present), 1)
        fig, ax = plt.subplots(figsize=(min(13.0, max(5.0, 0.28 * n_cols * max(len(present), 2) + 1.5)), 3.4))
        x = np.arange(n_cols)
        for j, b in enumerate(present):
            cells = [t.cells.get((b, i)) for i in range(n_cols)]
            means = [c["mean"] if c else np.nan for c in cells]
            stds = [0.0 if not c or pd.isna(c["std"]) else c["std"] for c in cells]
            ax.bar(x + (j - (len(present) - 1) / 2) * width, means, width, yerr=stds, label=b, color=colors[b],
                   capsize=2, error_kw={"elinewidth": 0.8, "alpha": 0.7})
        codes = [c.code for c in t.columns]
        crowded = n_cols > 8 or max(map(len, codes)) * n_cols > 70
        ax.set_xticks(x, codes, fontsize=8, rotation=35 if crowded else 0, ha="right" if crowded else "center")
        metrics = {c.metric for c in t.columns}
        ax.set_ylabel(f"{metrics.pop() if len(metrics) == 1 else 'score'} (mean ± std)")
        ax.set_title(t.title, fontweight="bold")
        ax.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        legend = t.legend().replace("`", "")
        charts.append((f"{t.title}: every column of its table ({t.caption()}); one bar per backbone, error bars: "
                       f"population std over seeds. {legend}".strip(), _png(fig)))
    return charts


def task_averages(lb: Leaderboard) -> pd.DataFrame:
    """Per backbone and task version, the summary's task average of the primary metric, for the backbones that have
    every cell of the task (an average over fewer cells would not be comparable)."""
    scores = task_scores(lb.long, lb.values)
    scores = scores[scores["complete"].astype(bool)] if not scores.empty else scores
    names = summary(lb).names
    return scores.assign(backbone_name=[names.get(b, ("", ""))[0] for b in scores["backbone"]],
                         variant=[names.get(b, ("", ""))[1] for b in scores["backbone"]])


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower cost and at least as high a score)."""
    front = []
    for i, (c, s) in enumerate(points):
        if not any((c2 <= c and s2 >= s) and (c2 < c or s2 > s) for j, (c2, s2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def log_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """A few round values (1, 2, 5 x 10^k ...) within [low, high] for a log axis: matplotlib labels every minor
    tick of a short log range, and those labels run together."""
    k0, k1 = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ticks: list[float] = []
    for mults in ((1,), (1, 3), (1, 2, 5), (1, 1.5, 2, 3, 5, 7)):
        ticks = [m * 10.0**k for k in range(k0, k1 + 1) for m in mults if low <= m * 10.0**k <= high]
        if len(ticks) >= 3:
            break
    step = math.ceil(len(ticks) / most)
    return [float(f"{t:.3g}") for t in ticks[::step]]


def _number_points(ax, pts: list[tuple[float, float]], labels: list[str]) -> None:
    """Each point's label beside it, on the first side (NE, SE, NW, SW) clear of the other points and the labels
    placed so far, so that close points (similar cost and score) keep legible numbers."""
    scale = ax.figure.dpi / 72.0
    centres = [tuple(ax.transData.transform(p)) for p in pts]
    placed: list[tuple[float, float]] = []
    for (x, y), label in sorted(zip(centres, labels, strict=True), key=lambda cl: cl[0]):
        options = [(5, 4), (5, -11), (-11, 4), (-11, -11)]
        chosen = options[0]
        for dx, dy in options:
            spot = (x + (dx + 3) * scale, y + (dy + 4) * scale)  # the label's middle, in pixels
            clear = all(math.dist(spot, c) > 9 * scale for c in centres)
            if clear and all(math.dist(spot, q) > 10 * scale for q in placed):
                chosen = (dx, dy)
                break
        placed.append((x + (chosen[0] + 3) * scale, y + (chosen[1] + 4) * scale))
        ax.annotate(label, ax.transData.inverted().transform((x, y)), textcoords="offset points", xytext=chosen,
                    fontsize=8, fontweight="bold")


def cost_chart(lb: Leaderboard, profiles: pd.DataFrame | None) -> tuple[str, str | None]:
    """Task average against latency per image; returns (caption or note, image or None). Points carry the
    backbone's number in the summary order; the legend under the panels names them."""
    if profiles is None or profiles.empty:
        return ("No cost profiles (`leaderboards/profiles.csv`) were found; run `harness profile` to add the "
                "accuracy-vs-cost chart.", None)
    avg = task_averages(lb)
    prof, device, dtype = select_profiles(profiles)
    cost = {(r.backbone, r.variant): float(r.latency_per_image_ms) for r in prof.itertuples()}
    avg = avg[[(b, v) in cost for b, v in zip(avg["backbone_name"], avg["variant"], strict=True)]]
    if avg.empty:
        return ("The profiles hold none of this leaderboard's backbones; no accuracy-vs-cost chart.", None)
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    order = _backbone_order(lb)
    number = {b: i + 1 for i, b in enumerate(order)}
    colors = _colors(order)
    tasks = sorted(avg.groupby(["task", "task_version", "metric"]).groups, key=lambda k: (k[0], natural_key(k[1])))
    fig, axes = plt.subplots(1, len(tasks), figsize=(min(4.2 * len(tasks), 13.0), 3.4), squeeze=False)
    for ax, (task, version, metric) in zip(axes[0], tasks, strict=True):
        g = avg[(avg["task"] == task) & (avg["task_version"] == version) & (avg["metric"] == metric)]
        g = g.reset_index(drop=True)
        pts = [(cost[(b, v)], s) for b, v, s in zip(g["backbone_name"], g["variant"], g["score"], strict=True)]
        front = pareto_front(pts)
        for i, (c, s) in enumerate(pts):
            on = i in front
            ax.scatter([c], [s], s=60 if on else 35, color=colors.get(g["backbone"][i], "gray"),
                       edgecolor="black" if on else "none", zorder=3)
        if len(front) > 1:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="black", lw=1,
                    alpha=0.6, zorder=2, drawstyle="steps-post")
        xs = [c for c, _ in pts]
        low, high = min(xs) / 1.6, max(xs) * 1.6
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.xaxis.set_major_locator(FixedLocator(log_ticks(low, high)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda val, _: f"{val:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.margins(y=0.15)
        ax.autoscale_view()
        _number_points(ax, pts, [str(number.get(b, "?")) for b in g["backbone"]])
        ax.set_xlabel("ms per image (log scale)")
        ax.set_ylabel(f"{metric} (task average)")
        ax.set_title(f"{task} v{version}", fontweight="bold")
    shown = [b for b in order if b in set(avg["backbone"])]
    handles = [Line2D([], [], marker="o", linestyle="", color=colors[b], label=f"{number[b]}  {b}") for b in shown]
    ncol = min(len(handles), 4)
    rows = math.ceil(len(handles) / ncol)  # matplotlib fills columns first: reorder so that 1, 2, 3 read across
    handles = [handles[r * ncol + c] for c in range(ncol) for r in range(rows) if r * ncol + c < len(handles)]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
               fontsize=8, frameon=False)
    fig.tight_layout()
    return (f"Task average of the primary metric against latency per image (`harness profile` on {device}, "
            f"{dtype}, each backbone's largest profiled batch); numbers are the backbones' places in the summary; "
            "black-edged points and the dashed line are the Pareto front (nothing both faster and better).",
            _png(fig))


def option_heatmaps(lb: Leaderboard) -> list[tuple[str, str]]:
    """Timestep × stage heatmaps of the task average (primary metric) per backbone:variant and task."""
    v = lb.values
    if v.empty or "option.t" not in v.columns or "option.stages" not in v.columns:
        return []
    v = v[v["primary"].astype(bool)].dropna(subset=["option.t", "option.stages"])
    if v.empty:
        return []
    plt = _plt()
    v = v.assign(t=v["option.t"].astype(str), stages=v["option.stages"].astype(str))
    charts = []
    for (name, variant, task, version), g in v.groupby(["backbone_name", "variant", "task", "task_version"]):
        cells = g.groupby(["t", "stages", "dataset", "setting"])["value"].mean().reset_index()
        grid = cells.groupby(["t", "stages"])["value"].mean().unstack("stages")
        if grid.size < 2:
            continue
        grid = grid.loc[sorted(grid.index, key=natural_key), sorted(grid.columns, key=natural_key)]
        fig, ax = plt.subplots(figsize=(1.0 * len(grid.columns) + 2.5, 0.5 * len(grid.index) + 1.8))
        im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(grid.columns)), list(grid.columns), rotation=30, ha="right")
        ax.set_yticks(range(len(grid.index)), list(grid.index))
        ax.set_xlabel("UNet stages")
        ax.set_ylabel("timestep t")
        ax.grid(False)
        finite = grid.to_numpy(dtype=float)
        mid = np.nanmean(finite) if np.isfinite(finite).any() else 0
        for (i, j), val in np.ndenumerate(finite):
            if np.isfinite(val):
                ax.text(j, i, f"{val:.1f}", ha="center", va="center", fontsize=7.5,
                        color="white" if val < mid else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(f"{name}:{variant} · {task} v{version}", fontweight="bold")
        charts.append((f"{name}:{variant} on {task} v{version}: mean of the primary metric over the task's "
                       "datasets, settings and seeds, per timestep and stage set.", _png(fig)))
    return charts


def _label_html(backbone: str) -> str:
    return escape(backbone).replace(" (random init)", " <span class=random>(random init)</span>")


def summary_html(s: Summary) -> str:
    """The summary table: a column per task (its primary metric's average), mean rank, cost columns."""
    if not s.rows:
        return "<p class=note>No primary-metric results to summarise.</p>"
    scores = {(r.backbone, r.task, r.task_version, r.metric): r for r in s.scores.itertuples()}
    best = {}
    for c in s.columns:
        done = [r.score for k, r in scores.items() if k[1:] == c and r.complete]
        if done:
            best[c] = max(done) if higher_is_better(c[2]) else min(done)
    head = ["<th>backbone</th>"]
    for c in s.columns:
        head.append(f"<th title='{escape(c[0])} v{escape(c[1])}: {escape(c[2])}, averaged over the task version&#39;s "
                    f"datasets and settings'>{escape(s.header(c))}<span class=sub>{escape(c[2])}</span></th>")
    head.append("<th title='mean over the task columns of the backbone&#39;s rank (1 = best)'>mean rank</th>")
    cost_cols = s.costs.columns if s.costs is not None else []
    head += [f"<th class=cost>{escape(c)}</th>" for c in cost_cols]
    rows = []
    for b in s.rows:
        tds = [f"<td>{_label_html(b)}</td>"]
        for c in s.columns:
            r = scores.get((b, *c))
            if r is None:
                tds.append("<td class=missing data-v=''>—</td>")
            elif not r.complete:
                tds.append(f"<td class=partial data-v='' title='over {r.cells} of the task&#39;s {r.of_cells} cells: "
                           f"not ranked'>{r.score:.2f}*</td>")
            else:
                cls = " class=best" if abs(r.score - best[c]) <= 1e-9 else ""
                tds.append(f"<td{cls} data-v='{r.score:.6g}' title='rank {r.rank:g}'>{r.score:.2f}</td>")
        rank, k = s.mean_rank.get(b, (float("nan"), 0))
        tds.append("<td class='rank missing' data-v=''>—</td>" if k == 0 else
                   f"<td class=rank data-v='{rank:.6g}'>{rank:.2f}"
                   + (f" <span class=n>({k}/{len(s.columns)})</span>" if k < len(s.columns) else "") + "</td>")
        cost = s.cost(b)
        for c in cost_cols:
            v = cost.get(c, float("nan"))
            tds.append(f"<td class=cost data-v='{'' if pd.isna(v) else f'{v:.6g}'}'>{_number(v)}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return (f"<div class=wrap><table class='lb summary' id=summary><thead><tr>{''.join(head)}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def task_table_html(t: TaskTable) -> str:
    """One task version's table: headers are the short codes with what they stand for under them."""
    head = ["<th>backbone</th>"]
    for c in t.columns:
        detail = "".join(f"<span class=detail>{escape(d)}</span>" for d in c.detail) if c.code != c.described else ""
        full = f"{t.task}.v{t.version}/{c.dataset}" + (f" [{c.setting}]" if c.setting else "") + f" {c.metric}"
        head.append(f"<th title='{escape(full, quote=True)}'><span class=code>{escape(c.code)}</span>{detail}</th>")
    rows = []
    for b in t.rows:
        tds = [f"<td>{_label_html(b)}</td>"]
        for i in range(len(t.columns)):
            cell = t.cells.get((b, i))
            if cell is None:
                tds.append("<td class=missing data-v=''>—</td>")
                continue
            text = task_cell_text(cell, cell["n"])  # mean ± std; a seed count that differs follows, smaller
            n = f"<span class=n>n={cell['n']}</span>" if cell["n"] != t.usual_n else ""
            title = (f" title='paired t-test vs best over {int(cell['n_paired'])} seeds: p = {cell['p_value']:.3g}'"
                     if not pd.isna(cell["p_value"]) else "")
            cls = " class=best" if cell["best"] else (" class=tied" if cell["tied"] else "")
            mark = f" {TIED_MARK}" if cell["tied"] else ""
            tds.append(f"<td{cls}{title} data-v='{cell['mean']:.6g}'>{escape(text)}{mark}{n}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return (f"<div class=wrap><table class=lb id={t.slug}><thead><tr>{''.join(head)}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _md_inline(text: str) -> str:
    """The two Markdown marks the shared notes use: **bold** and `code`."""
    import re

    text = escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def provenance_html(lb: Leaderboard) -> str:
    p = lb.provenance
    commits = ", ".join(f"<code>{escape(c)}</code> ({n} runs)" for c, n in p.git_commits.items()) or "—"
    parts = [f"<p class=note>Compiled {escape(p.compiled)} from MLflow runs · harness "
             f"{escape(', '.join(p.harness_versions))} · git commit(s) of the runs: {commits}</p>"]
    if not p.weights.empty:
        rows = "".join(f"<tr><td>{escape(r.backbone)}</td><td>{escape(r.weights_kind or '?')}</td>"
                       f"<td><code title='{escape(r.weights_fingerprint, quote=True)}'>"
                       f"{escape(_short(r.weights_fingerprint))}</code></td></tr>" for r in p.weights.itertuples())
        parts.append("<table class=prov><thead><tr><th>backbone</th><th>weights</th><th>fingerprint</th></tr>"
                     f"</thead><tbody>{rows}</tbody></table>")
    if not p.tasks.empty:
        rows = []
        for r in p.tasks.itertuples():
            proto = p.protocol.get(f"{r.task}.v{r.task_version}", {})
            proto_txt = ", ".join(f"{k}={v}" for k, v in sorted(proto.items())) or "—"
            rows.append(f"<tr><td>{escape(r.task)}</td><td>v{escape(str(r.task_version))}</td>"
                        f"<td>{escape(r.datasets)}</td><td style='white-space:normal'>{escape(r.settings)}</td>"
                        f"<td>{escape(r.seeds)}</td><td style='white-space:normal;font-size:.75rem'>"
                        f"{escape(proto_txt)}</td></tr>")
        parts.append("<table class=prov><thead><tr><th>task</th><th>version</th><th>datasets</th><th>settings</th>"
                     "<th>seeds</th><th>protocol (shared by all its runs)</th></tr></thead><tbody>"
                     + "".join(rows) + "</tbody></table>")
    if not p.settings.empty:
        rows = "".join(f"<tr><td>{escape(r.backbone)}</td><td>{escape(r.task)}</td>"
                       f"<td style='white-space:normal'>{escape(r.options)}</td></tr>" for r in p.settings.itertuples())
        parts.append("<table class=prov><thead><tr><th>backbone</th><th>task</th><th>backbone options its cells ran "
                     f"with</th></tr></thead><tbody>{rows}</tbody></table>")
    return "\n".join(parts)


def _figures(charts: list[tuple[str, str]], alt: str) -> str:
    return "<div class=charts>" + "".join(
        f"<figure><img class=chart alt='{escape(alt, quote=True)}' src='{uri}'><figcaption>{escape(cap)}"
        "</figcaption></figure>" for cap, uri in charts) + "</div>"


def _notes(lines: list[str]) -> str:
    return "<div class='note notes'>" + "".join(f"<p>{_md_inline(line)}</p>" for line in lines) + "</div>"


def render_html(lb: Leaderboard, profiles: pd.DataFrame | None = None) -> str:
    """Results first (summary, then a table per task version), then charts; the provenance last, folded."""
    suite = escape(lb.suite)
    s = summary(lb, profiles)
    order = _backbone_order(lb, s)
    tables = task_tables(lb, order=order)
    body = [f"<h1>Leaderboard: suite <code>{suite}</code></h1>"]
    if lb.long.empty:
        body.append("<p class=note>No finished runs.</p>")
    else:
        compiled = f"compiled {escape(lb.provenance.compiled)} · " if lb.provenance is not None else ""
        body += [f"<p class=note>{lb.long['backbone'].nunique()} backbone row(s) × {len(tables)} task version(s) · "
                 f"{compiled}click a column heading to sort · charts below the tables, provenance at the end</p>",
                 "<h2>Summary</h2>", summary_html(s), _notes(summary_notes(s)),
                 "<h2>Per task</h2>",
                 _notes([LEGEND + " Hover a cell for its p value.", VERSIONS_NOTE + " Rows marked (random init) use "
                         "randomly initialised weights."])]
        for t in tables:
            body += [f"<h3 id=h-{t.slug}>{escape(t.title)}</h3>", f"<p class=note>{escape(t.caption())}</p>",
                     task_table_html(t)]
        bars = task_bar_charts(lb, tables, order)
        cost_note, cost_uri = cost_chart(lb, profiles)
        heat = option_heatmaps(lb)
        if bars:
            body += ["<h2>Charts per task</h2>", _figures(bars, "per-task bar chart")]
        body.append("<h2>Accuracy vs cost</h2>")
        body.append(_figures([(cost_note, cost_uri)], "accuracy vs cost") if cost_uri
                    else f"<p class=note>{_md_inline(cost_note)}</p>")
        if heat:
            body += ["<h2>Backbone options: timestep × stage</h2>", _figures(heat, "timestep by stage heatmap")]
    if lb.provenance is not None:
        body.append(f"<details class=prov id=provenance><summary>Provenance</summary>{provenance_html(lb)}</details>")
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>Leaderboard: {suite}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>{JS}</script>\n</body></html>\n")
