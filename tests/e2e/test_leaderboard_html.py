"""The HTML leaderboard opened in headless Chromium at 1280 x 900: the summary above the fold, tables, chart
images, sorting, the provenance folded last, no console errors.

Needs Debian's `chromium` (`/usr/bin/chromium`, or `$CHROMIUM`); skipped with the reason when it is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.report.leaderboard import build_leaderboard
from harness.report.publish import write_leaderboard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))  # the shared synthetic board
from leaderboard_factory import realistic_runs, write_profiles  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("headless Chromium not found (install it: apt-get install -y chromium, or set $CHROMIUM)")


def run_chromium(binary: str, page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=2000", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=50)


def test_page_renders_in_headless_chromium(tmp_path):
    """A realistic board (4 backbones, FSC over 6 settings, OVSS, SBIR, cost profiles) at 1280 x 900: the summary
    sits above the fold and fits the width, a per-task table sorts on a click, every chart loads, the provenance
    is folded at the end, and nothing logs to the console."""
    binary = chromium()
    out = tmp_path / "lb"
    write_profiles(out)
    runs = realistic_runs()
    page = write_leaderboard(build_leaderboard("e2e", runs), out)[2]
    # A probe appended to a copy of the page clicks the FSC table's first column heading twice, measures the
    # summary table and the page, and writes what it found into the DOM, which --dump-dom then prints.
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", """<script>
var names = function(id){ return Array.from(document.querySelectorAll('#' + id + ' tbody tr td:first-child'))
  .map(function(td){ return td.textContent.trim(); }); };
var th = document.querySelectorAll('#task-fsc-v2 thead th')[1];
th.click(); var desc = names('task-fsc-v2');
th.click(); var asc = names('task-fsc-v2');
window.addEventListener('load', function(){
  var imgs = Array.from(document.querySelectorAll('img.chart'));
  var loaded = imgs.filter(function(i){ return i.complete && i.naturalWidth > 0; }).length;
  var table = document.getElementById('summary'), box = table.getBoundingClientRect();
  var prov = document.getElementById('provenance'), last = Array.from(document.querySelectorAll('img.chart')).pop();
  var p = document.createElement('pre'); p.id = 'probe';
  p.textContent = JSON.stringify({desc: desc, asc: asc, images: imgs.length, loaded: loaded,
    summary: names('summary'), top: box.top, bottom: box.bottom, right: box.right,
    wrapScroll: table.parentElement.scrollWidth, wrapClient: table.parentElement.clientWidth,
    pageWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, innerHeight: window.innerHeight,
    provOpen: prov.open, provAfterCharts: prov.getBoundingClientRect().top > last.getBoundingClientRect().bottom});
  document.body.appendChild(p);
});
</script></body>"""))
    proc = run_chromium(binary, probe, tmp_path, "--window-size=1280,900", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    import html
    import json

    got = json.loads(html.unescape(found.group(1)))
    assert got["innerWidth"] == 1280, got
    # the summary: above the fold, as wide as the page at most, rows by mean rank (resnet wins every task here)
    assert 0 < got["top"] < got["bottom"] <= 900 and got["right"] <= 1280, got
    assert got["wrapScroll"] <= got["wrapClient"] and got["pageWidth"] <= got["innerWidth"], got
    assert got["summary"][0].startswith("resnet:tiny") and len(got["summary"]) == 4
    # sorting FSC's first column (head=linear-probe, shots=1), oracle: the runs' own means
    lp1 = runs[runs["tags.harness.column"] == "head=linear-probe,shots=1"]
    expected = lp1.groupby("tags.harness.backbone")["metrics.top1"].mean().sort_values(ascending=False)
    assert [r.split(":")[0] for r in got["desc"]] == list(expected.index)
    assert got["asc"] == got["desc"][::-1]
    assert got["images"] >= 4 and got["loaded"] == got["images"]
    assert got["provOpen"] is False and got["provAfterCharts"] is True
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)
    # The page as written, unprobed, at 1280 x 900: no console errors either, and a screenshot for CI's artifacts.
    shot = Path(os.environ.get("HARNESS_SCREENSHOT_DIR", tmp_path)) / "leaderboard.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    proc = run_chromium(binary, page, tmp_path, "--window-size=1280,900", "--hide-scrollbars",
                        f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)
