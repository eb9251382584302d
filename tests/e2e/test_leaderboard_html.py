"""The HTML leaderboard opened in headless Chromium: table rows, chart images, sorting, no console errors.

Needs Debian's `chromium` (`/usr/bin/chromium`, or `$CHROMIUM`); skipped with the reason when it is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from harness.leaderboard import build_leaderboard, write_leaderboard

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("headless Chromium not found (install it: apt-get install -y chromium, or set $CHROMIUM)")


def fake_runs() -> pd.DataFrame:
    rows = []
    for bb, kind, base in (("resnet", "random", 50.0), ("clip", "hub", 40.0), ("dino", "hub", 45.0)):
        for seed in (1, 2, 3):
            for shots in (1, 4):
                rows.append({"tags.harness.job_key": f"{bb}{seed}{shots}", "tags.harness.primary_metric": "top1",
                             "metrics.top1": base + shots + seed * 0.7, "tags.harness.backbone": bb,
                             "tags.harness.variant": "tiny", "tags.harness.weights_kind": kind,
                             "tags.harness.weights_fingerprint": f"fp{bb}", "tags.harness.task": "fsc",
                             "tags.harness.task_version": "1", "tags.harness.dataset": "mini",
                             "tags.harness.column": f"shots={shots}", "tags.harness.git_commit": "abc",
                             "params.protocol.seed": str(seed)})
    return pd.DataFrame(rows)


def run_chromium(binary: str, page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=2000", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=50)


def test_page_renders_in_headless_chromium(tmp_path):
    binary = chromium()
    out = tmp_path / "lb"
    (out / "profiles.csv").parent.mkdir(parents=True)
    (out / "profiles.csv").write_text("backbone,variant,device,batch_size,latency_per_image_ms\n"
                                      "resnet,tiny,cpu,8,2.0\nclip,tiny,cpu,8,5.0\ndino,tiny,cpu,8,3.0\n")
    page = write_leaderboard(build_leaderboard("e2e", fake_runs()), out)[2]
    # A probe appended to a copy of the page clicks a column heading twice and writes the row order
    # and the number of loaded chart images into the DOM, which --dump-dom then prints.
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", """<script>
var th = document.querySelectorAll('#leaderboard thead th')[1];
th.click(); var desc = Array.from(document.querySelectorAll('#leaderboard tbody tr td:first-child'))
  .map(function(td){ return td.textContent.trim(); });
th.click(); var asc = Array.from(document.querySelectorAll('#leaderboard tbody tr td:first-child'))
  .map(function(td){ return td.textContent.trim(); });
window.addEventListener('load', function(){
  var imgs = Array.from(document.querySelectorAll('img.chart'));
  var loaded = imgs.filter(function(i){ return i.complete && i.naturalWidth > 0; }).length;
  var p = document.createElement('pre'); p.id = 'probe';
  p.textContent = JSON.stringify({desc: desc, asc: asc, images: imgs.length, loaded: loaded});
  document.body.appendChild(p);
});
</script></body>"""))
    proc = run_chromium(binary, probe, tmp_path, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert dom.count("<tr>") >= 4 and "resnet:tiny" in dom and "clip:tiny" in dom and "dino:tiny" in dom
    assert len(re.findall(r"<th[ >]", dom)) >= 3
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    import html
    import json

    probe_out = json.loads(html.unescape(found.group(1)))
    assert probe_out["images"] >= 2 and probe_out["loaded"] == probe_out["images"]
    # fsc shots=1: resnet (50+) > dino (45+) > clip (40+)
    assert [r.split(" ")[0] for r in probe_out["desc"]] == ["resnet:tiny", "dino:tiny", "clip:tiny"]
    assert probe_out["asc"] == probe_out["desc"][::-1]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)
    # The page as written, unprobed: no console errors either, and a screenshot for CI's artifacts.
    shot = Path(os.environ.get("HARNESS_SCREENSHOT_DIR", tmp_path)) / "leaderboard.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    proc = run_chromium(binary, page, tmp_path, "--window-size=1400,1800", f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)
