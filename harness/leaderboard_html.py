"""`leaderboards/<suite>.html`: one self-contained page (inline CSS and JS, charts as embedded PNGs).

The sortable table with the best cell per column and the †-marks of `harness.stats`, per-task bar charts,
accuracy against cost (latency per image from `profiles.csv`, Pareto front marked) and, for backbones run
over a grid of options (Vermouth's `t` × `stages`), a heatmap per task. Nothing on the page loads from
the network.
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from harness.leaderboard import (
    LEGEND,
    TIED_MARK,
    VERSIONS_NOTE,
    Leaderboard,
    _short,
    column_name,
    column_order,
    natural_key,
)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;
 max-width:1400px;padding:0 1rem;color:#1f2328;background:#fff;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;
 padding-bottom:.3rem}
.note{color:#57606a;font-size:.9rem;margin:.3rem 0}
.wrap{overflow-x:auto;border:1px solid #d0d7de;border-radius:6px}
table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{padding:.35rem .6rem;border-bottom:1px solid #eaeef2;text-align:right;white-space:nowrap}
th{background:#f6f8fa;position:sticky;top:0;cursor:pointer;user-select:none;vertical-align:bottom;
 font-weight:600;white-space:normal;min-width:7rem}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;background:#fff;z-index:1}
th:first-child{background:#f6f8fa;z-index:2}
th .task{display:block;color:#0969da}th .metric{display:block;color:#57606a;font-weight:400}
th[data-dir=asc]::after{content:" ▲"}th[data-dir=desc]::after{content:" ▼"}
tbody tr:nth-child(even) td{background:#fafbfc}tbody tr:hover td{background:#f1f8ff}
td.best{font-weight:700;background:#dafbe1 !important}td.tied{background:#f4fdf6}
td .n{color:#8c959f;font-size:.75rem;margin-left:.2rem}td.missing{color:#bbb}
.random{color:#9a6700;font-size:.8rem}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.charts figure{margin:0;border:1px solid #d0d7de;
 border-radius:6px;padding:.5rem;background:#fff}.charts img{max-width:100%;height:auto;display:block}
figcaption{font-size:.85rem;color:#57606a;margin-top:.3rem}
table.prov{width:auto}table.prov td,table.prov th{text-align:left;cursor:default;position:static}
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


def read_profiles(out_dir: Path) -> pd.DataFrame | None:
    path = Path(out_dir) / "profiles.csv"
    if not path.is_file():
        return None
    profiles = pd.read_csv(path)
    needed = {"backbone", "variant", "latency_per_image_ms"}
    return profiles if needed <= set(profiles.columns) else None


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


def _column_label(row) -> str:
    setting = f"\n{row['setting']}" if row["setting"] else ""
    return f"{row['dataset']}{setting}\n{row['metric']}"


def task_bar_charts(lb: Leaderboard) -> list[tuple[str, str]]:
    """One grouped bar chart per task version: a group per column, a bar per backbone, std as error bars."""
    long = lb.long
    if long.empty:
        return []
    plt = _plt()
    backbones = sorted(long["backbone"].unique())
    colors = _colors(backbones)
    charts = []
    for (task, version), g in long.groupby(["task", "task_version"], sort=True):
        g = g.assign(column=g.apply(column_name, axis=1))
        cols = sorted(g["column"].unique(), key=natural_key)
        present = [b for b in backbones if b in set(g["backbone"])]
        width = 0.8 / max(len(present), 1)
        fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(cols) * max(1, len(present) / 4) + 2), 3.6))
        x = np.arange(len(cols))
        for j, b in enumerate(present):
            sub = g[g["backbone"] == b].set_index("column").reindex(cols)
            ax.bar(x + (j - (len(present) - 1) / 2) * width, sub["mean"], width, yerr=sub["std"].fillna(0),
                   label=b, color=colors[b], capsize=2, error_kw={"elinewidth": 0.8, "alpha": 0.7})
        labels = [_column_label(g[g["column"] == c].iloc[0]) for c in cols]
        ax.set_xticks(x, labels, fontsize=7.5)
        ax.set_ylabel("score (mean ± std over seeds)")
        ax.set_title(f"{task} v{version}", fontweight="bold")
        ax.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        charts.append((f"{task} v{version}: every column of the task, one bar per backbone "
                       "(error bars: population std over seeds).", _png(fig)))
    return charts


def task_averages(lb: Leaderboard) -> pd.DataFrame:
    """Per backbone and task version, the mean of its primary-metric cells (a one-number summary)."""
    v = lb.values
    if v.empty:
        return pd.DataFrame(columns=["backbone", "backbone_name", "variant", "task", "score"])
    prim = v[v["primary"].astype(bool)]
    cells = prim.groupby(["backbone", "backbone_name", "variant", "task", "task_version", "dataset", "setting"],
                         sort=True)["value"].mean().reset_index()
    out = cells.groupby(["backbone", "backbone_name", "variant", "task", "task_version"])["value"].agg(
        score="mean", cells="count").reset_index()
    # only backbones with as many cells as the task's most complete backbone: a fair average
    full = out.groupby(["task", "task_version"])["cells"].transform("max")
    return out[out["cells"] == full]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower cost and at least as high a score)."""
    front = []
    for i, (c, s) in enumerate(points):
        if not any((c2 <= c and s2 >= s) and (c2 < c or s2 > s) for j, (c2, s2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def cost_chart(lb: Leaderboard, profiles: pd.DataFrame | None) -> tuple[str, str | None]:
    """Task average against latency per image; returns (caption or note, image or None)."""
    if profiles is None or profiles.empty:
        return ("No cost profiles (`leaderboards/profiles.csv`) were found; run `harness profile` to add the "
                "accuracy-vs-cost chart.", None)
    avg = task_averages(lb)
    prof = profiles.dropna(subset=["latency_per_image_ms"])
    if "device" in prof.columns:  # one device: the one profiling the most backbones
        device = prof.groupby("device")["backbone"].nunique().idxmax()
        prof = prof[prof["device"] == device]
    else:
        device = "?"
    if "batch_size" in prof.columns:
        prof = prof.sort_values("batch_size").groupby(["backbone", "variant"]).tail(1)
    cost = {(r.backbone, r.variant): (r.latency_per_image_ms, getattr(r, "batch_size", "?"))
            for r in prof.itertuples()}
    avg = avg[[(b, v) in cost for b, v in zip(avg["backbone_name"], avg["variant"], strict=True)]]
    if avg.empty:
        return ("The profiles hold none of this leaderboard's backbones; no accuracy-vs-cost chart.", None)
    plt = _plt()
    tasks = list(avg.groupby(["task", "task_version"]).groups)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), squeeze=False)
    colors = _colors(sorted(lb.long["backbone"].unique()))
    for ax, (task, version) in zip(axes[0], tasks, strict=True):
        g = avg[(avg["task"] == task) & (avg["task_version"] == version)].reset_index(drop=True)
        pts = [(cost[(b, v)][0], s) for b, v, s in zip(g["backbone_name"], g["variant"], g["score"], strict=True)]
        front = pareto_front(pts)
        for i, (c, s) in enumerate(pts):
            on = i in front
            ax.scatter([c], [s], s=60 if on else 35, color=colors.get(g["backbone"][i], "gray"),
                       edgecolor="black" if on else "none", zorder=3, label=g["backbone"][i])
            ax.annotate(g["backbone"][i], (c, s), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if len(front) > 1:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="black", lw=1,
                    alpha=0.6, zorder=2, drawstyle="steps-post")
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda val, _: f"{val:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda val, _: f"{val:g}"))
        ax.margins(x=0.15, y=0.12)
        ax.set_xlabel(f"latency per image (ms, {device}, log scale)")
        ax.set_ylabel("task average (primary metric)")
        ax.set_title(f"{task} v{version}", fontweight="bold")
    fig.tight_layout()
    return ("Task average of the primary metric against latency per image (largest profiled batch, device "
            f"{escape(str(device))}); black-edged points and the dashed line are the Pareto front (nothing "
            "both faster and better).", _png(fig))


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


def _th(column: str, row) -> str:
    setting = f"<span class=metric>{escape(str(row['setting']))}</span>" if row["setting"] else ""
    return (f"<th title='{escape(column, quote=True)}'><span class=task>{escape(row['task'])}.v"
            f"{escape(str(row['task_version']))}</span>{escape(str(row['dataset']))}{setting}"
            f"<span class=metric>{escape(str(row['metric']))}</span></th>")


def table_html(lb: Leaderboard) -> str:
    long = lb.long
    if long.empty:
        return "<p class=note>No finished runs.</p>"
    cols = column_order(long)
    long = long.assign(column=long.apply(column_name, axis=1))
    marks = lb.marks.set_index(["backbone", "task", "task_version", "dataset", "setting", "metric"])
    first = long.drop_duplicates("column").set_index("column")
    head = "<th>backbone</th>" + "".join(_th(c, first.loc[c]) for c in cols)
    cell = {(r.backbone, r.column): r for r in long.itertuples()}
    rows = []
    for b in sorted(long["backbone"].unique()):
        name = escape(b).replace(" (random init)", " <span class=random>(random init)</span>")
        tds = [f"<td>{name}</td>"]
        for c in cols:
            r = cell.get((b, c))
            if r is None:
                tds.append("<td class=missing data-v=''>—</td>")
                continue
            m = marks.loc[(r.backbone, r.task, r.task_version, r.dataset, r.setting, r.metric)]
            best, tied = bool(m["best"]), m["tied"] is True
            text = f"{r.mean:.2f}" + (f" ± {r.std:.2f}" if r.n > 1 and not pd.isna(r.std) else "")
            n = f"<span class=n>n={r.n}</span>"
            title = (f" title='paired t-test vs best over {int(m['n_paired'])} seeds: p = {m['p_value']:.3g}'"
                     if not pd.isna(m["p_value"]) else "")
            cls = " class=best" if best else (" class=tied" if tied else "")
            mark = f" {TIED_MARK}" if tied else ""
            tds.append(f"<td{cls}{title} data-v='{r.mean:.6g}'>{text}{mark}{n}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return (f"<div class=wrap><table class=lb id=leaderboard><thead><tr>{head}</tr></thead>"
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


def render_html(lb: Leaderboard, profiles: pd.DataFrame | None = None) -> str:
    suite = escape(lb.suite)
    bars = task_bar_charts(lb)
    cost_note, cost_uri = cost_chart(lb, profiles)
    heat = option_heatmaps(lb)
    body = [f"<h1>Leaderboard: suite <code>{suite}</code></h1>", provenance_html(lb),
            "<h2>Table</h2>",
            "<p class=note>Cells: mean ± population std over seeds (n = number of seeds). Click a column "
            f"heading to sort. {_md_inline(LEGEND)} Hover a cell for its p value.</p>",
            f"<p class=note>{_md_inline(VERSIONS_NOTE)} Rows marked <span class=random>(random init)</span> "
            "use randomly initialised weights.</p>",
            table_html(lb)]
    if bars:
        body += ["<h2>Per task</h2>", _figures(bars, "per-task bar chart")]
    body.append("<h2>Accuracy vs cost</h2>")
    body.append(_figures([(cost_note, cost_uri)], "accuracy vs cost") if cost_uri
                else f"<p class=note>{_md_inline(cost_note)}</p>")
    if heat:
        body += ["<h2>Backbone options: timestep × stage</h2>", _figures(heat, "timestep by stage heatmap")]
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>Leaderboard: {suite}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>{JS}</script>\n</body></html>\n")
