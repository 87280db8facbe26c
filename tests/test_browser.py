"""The HTML report in a real browser: headless Chromium opens a report built on a tiny model;
the test fails on any JavaScript error and checks that every figure rendered.

No browser driver is needed: a copy of the report gets a small error collector as the first
script of its <head>; Chromium's `--dump-dom` prints the page after its scripts ran, including
what the collector found, and `--screenshot` saves a PNG. Skipped when Chromium is absent
(CI installs it: scripts/ci_browser.sh).

Run by hand on any report: python -m tests.test_browser out/report.html [shot.png]
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)

# Collects errors from the very start of the page, then reports what rendered.
_COLLECTOR = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var where = e.target && e.target !== window ? " (resource " + (e.target.src || e.target.href ||
    e.target.tagName) + ")" : "";
  window.__errors.push(String(e.message || "error") + where);
}, true);
window.addEventListener("unhandledrejection", function (e) {
  window.__errors.push("unhandled rejection: " + String(e.reason));
});
(function () {
  var original = console.error;
  console.error = function () {
    window.__errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
window.addEventListener("load", function () {
  setTimeout(function () {
    var divs = Array.prototype.slice.call(document.querySelectorAll(".plotly-graph-div"));
    var sortable = null, header = document.querySelector("table.data thead th");
    if (header) {
      try { header.click(); header.click(); sortable = header.classList.contains("desc"); }
      catch (err) { window.__errors.push("sorting: " + err); }
    }
    var out = document.createElement("pre");
    out.id = "__report_check";
    out.textContent = JSON.stringify({
      errors: window.__errors,
      plotly_loaded: typeof window.Plotly !== "undefined",
      figures: divs.length,
      rendered: divs.filter(function (d) {
        return d.classList.contains("js-plotly-plot") && d.querySelector(".main-svg") &&
          d.getBoundingClientRect().height > 50;
      }).length,
      main_svgs: document.querySelectorAll(".main-svg").length,
      tables: document.querySelectorAll("table.data").length,
      sections: document.querySelectorAll("main > section").length,
      sortable: sortable
    });
    document.body.appendChild(out);
  }, 300);
});
</script>"""


def find_chromium() -> str | None:
    for name in _CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    return None


def check_in_browser(
    report: str | Path, screenshot: str | Path | None = None, timeout: float = 120
) -> dict:
    """Open `report` in headless Chromium; return the collector's findings (errors, figures,
    rendered figures, ...) and save a screenshot of the top of the page if asked."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("Chromium is not installed (apt-get install -y chromium).")
    report = Path(report)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        text = report.read_text(encoding="utf-8")
        head = re.search(r"<head[^>]*>", text)
        if head is None:
            raise AssertionError(f"{report} has no <head>.")
        page.write_text(text[: head.end()] + _COLLECTOR + text[head.end() :], encoding="utf-8")
        flags = [*_FLAGS, f"--user-data-dir={tmp}/profile", "--virtual-time-budget=15000"]
        dom = subprocess.run(
            [chromium, *flags, "--window-size=1280,2000", "--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        match = re.search(r'<pre id="__report_check">(.*?)</pre>', dom.stdout, re.S)
        if match is None:
            raise AssertionError(
                f"The page never finished loading in Chromium (exit {dom.returncode}).\n"
                f"stderr: {dom.stderr[-2000:]}"
            )
        found = json.loads(html.unescape(match.group(1)))
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    chromium,
                    *flags,
                    "--window-size=1280,2400",
                    f"--screenshot={shot}",
                    page.as_uri(),
                ],
                capture_output=True,
                timeout=timeout,
            )
            found["screenshot"] = str(shot) if shot.is_file() else None
    return found


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed")
def test_report_renders_in_chromium(tmp_path):
    from rope_interp.interventions.experiment import RunSettings
    from rope_interp.loading.data import Corpus
    from rope_interp.report import build_report
    from tests.helpers import make_model, random_tokens

    model = make_model("gqa")
    corpus = Corpus("random tokens", random_tokens(model, batch=4, pos=32), False)
    report = build_report(model, corpus, settings=RunSettings(progress=False, n_boot=50))
    path = report.write(tmp_path / "report.html")
    found = check_in_browser(path, screenshot=tmp_path / "report.png")

    assert found["errors"] == [], found["errors"]
    assert found["plotly_loaded"]
    assert report.n_figures > 0
    assert found["figures"] == report.n_figures
    assert found["rendered"] == report.n_figures, found
    assert found["main_svgs"] >= report.n_figures
    n_claims_tables = 1 if len(report.claims) else 0  # the Claims table near the top
    assert found["tables"] == n_claims_tables + sum(
        len(list(s.iter_tables())) for s in report.sections
    )
    assert found["sections"] == len(report.sections)
    assert found["sortable"] is True  # clicking a header sorts (ascending, then descending)
    assert found["screenshot"] and Path(found["screenshot"]).stat().st_size > 10_000


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed")
def test_collector_catches_javascript_errors(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><head></head><body><script>undefinedFunction();</script>"
        "</body></html>"
    )
    found = check_in_browser(broken)
    assert any("undefinedFunction" in error for error in found["errors"]), found


if __name__ == "__main__":
    result = check_in_browser(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    print(json.dumps(result, indent=1))
    sys.exit(1 if result["errors"] or result["rendered"] != result["figures"] else 0)
