"""``--isolate-html``: one self-contained page of per-test resource bars.

Everything is inline (CSS, script, data); the page loads nothing from the
network, so it can be archived as a CI artifact and opened anywhere.  Rows
are rendered here, so the page is readable without JavaScript; the script
only sorts (click a column heading) and starts sorted by peak memory.
Bars of one column share a scale that covers every figure and every
limit near them, so a limit is a red line across the track at its true
place; a limit far above every figure is a dashed line at the right edge.
"""
from __future__ import annotations

from html import escape
from typing import Any, Callable, Dict, List, Mapping, Optional

from .stats import cpu_seconds, human_bytes, human_seconds

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2330; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
.meta, .legend { color: #5a6272; margin: .2em 0 .8em; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; cursor: pointer; user-select: none; border-bottom: 2px solid #c9cfda; padding: .35em .5em;
     white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td { border-bottom: 1px solid #e6e9ef; padding: .3em .5em; vertical-align: middle; }
td.nodeid { font-family: ui-monospace, monospace; word-break: break-all; }
td.outcome.passed { color: #17803d; } td.outcome.failed, td.outcome.error { color: #b42318; }
td.outcome.skipped, td.outcome.xfailed, td.outcome.xpassed { color: #8a6d00; }
.barcell { width: 28%; }
.track { position: relative; height: 14px; background: #eef1f6; border-radius: 3px; }
.bar { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 3px; min-width: 1px; }
.bar.mem, .key.mem { background: #3b6fd8; } .bar.cpu, .key.cpu { background: #e08a1e; }
.limit { position: absolute; top: -3px; bottom: -3px; width: 2px; background: #d11; }
.limit.off { background: repeating-linear-gradient(#d11 0 3px, transparent 3px 5px); }
.key { display: inline-block; width: 14px; height: 10px; margin: 0 .3em 0 1em; border-radius: 2px; }
.key.limit-key { background: #d11; width: 2px; height: 14px; vertical-align: middle; }
.val { font-variant-numeric: tabular-nums; font-size: .9em; color: #39404d; }
.src { color: #8a91a0; font-size: .8em; }
"""

_JS = """
(function () {
  var table = document.getElementById("isolate-stats");
  var body = table.tBodies[0];
  function value(row, key, type) {
    var v = row.getAttribute("data-" + key);
    if (type === "num") { return v === "" ? -Infinity : parseFloat(v); }
    return v;
  }
  function sortBy(th, dir) {
    var key = th.getAttribute("data-key"), type = th.getAttribute("data-type");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, key, type), y = value(b, key, type);
      var c = x < y ? -1 : x > y ? 1 : 0;
      return dir === "asc" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
    table.setAttribute("data-sorted", key + ":" + dir);
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    th.addEventListener("click", function () {
      var now = th.getAttribute("aria-sort");
      sortBy(th, now === "descending" ? "asc" : "desc");
    });
  });
  sortBy(table.querySelector('th[data-key="mem"]'), "desc");
})();
"""


#: A limit more than this many times the column's largest figure is drawn
#: at the right edge (dashed) instead of shrinking every bar to a sliver.
OFF_SCALE = 4.0


def _num(value: Optional[float]) -> str:
    return "" if value is None else repr(float(value))


def _bar(kind: str, value: Optional[float], limit: Optional[float], scale: float,
         fmt: Callable[[Optional[float]], str], source: str) -> str:
    width = 0.0 if value is None or scale <= 0 else min(100.0, value / scale * 100)
    parts = ['<div class="track">', f'<div class="bar {kind}" style="width:{width:.2f}%"></div>']
    if limit is not None and scale > 0:
        if limit <= scale:
            parts.append(f'<div class="limit" style="left:{min(99.5, limit / scale * 100):.2f}%" '
                         f'title="limit {escape(fmt(limit))}"></div>')
        else:  # far above every figure: drawn at the edge, so the bars stay readable
            parts.append(f'<div class="limit off" style="left:99.5%" '
                         f'title="limit {escape(fmt(limit))} (off the scale)"></div>')
    parts.append("</div>")
    text = fmt(value) + (f" / limit {fmt(limit)}" if limit is not None else "")
    parts.append(f'<span class="val">{escape(text)}</span> <span class="src">{escape(source)}</span>')
    return "".join(parts)


def _scale(figures: List[Optional[float]], limits: List[Optional[float]]) -> float:
    """The column's full width: the largest figure, or a limit if one is
    near enough (within ``OFF_SCALE`` times it) for its line to mean something."""
    top = max([v for v in figures if v is not None] or [0.0])
    near = [v for v in limits if v is not None and (top == 0 or v <= top * OFF_SCALE)]
    return max([top, *near])


def render(document: Mapping[str, Any]) -> str:
    """The page for one ``--isolate-json`` document."""
    tests: List[Dict[str, Any]] = list(document.get("tests", []))
    mems = [t["stats"].get("peak_memory_bytes") for t in tests]
    cpus = [cpu_seconds(t["stats"]) for t in tests]
    mem_limits = [t["limits"].get("memory_bytes") for t in tests]
    cpu_limits = [t["limits"].get("cpu_time_seconds") for t in tests]
    mem_scale, cpu_scale = _scale(mems, mem_limits), _scale(cpus, cpu_limits)
    rows = []
    for t, mem, cpu, mem_limit, cpu_limit in zip(tests, mems, cpus, mem_limits, cpu_limits):
        st = t["stats"]
        outcome = t.get("outcome") or "passed"
        shown = outcome + (f" ({t['status']})" if t.get("status") else "")
        warn = "".join(f'<div class="src">{escape(str(w))}</div>' for w in t.get("warnings") or [])
        rows.append(
            f'<tr data-nodeid="{escape(t["nodeid"])}" data-outcome="{escape(shown)}" data-mem="{_num(mem)}" '
            f'data-cpu="{_num(cpu)}" data-wall="{_num(st.get("wall_seconds"))}">'
            f'<td class="nodeid">{escape(t["nodeid"])}{warn}</td>'
            f'<td class="outcome {escape(outcome)}">{escape(shown)}</td>'
            f'<td class="barcell">{_bar("mem", mem, mem_limit, mem_scale, human_bytes, st.get("peak_memory_bytes_source") or "")}</td>'  # noqa: E501
            f'<td class="barcell">{_bar("cpu", cpu, cpu_limit, cpu_scale, human_seconds, st.get("cpu_user_seconds_source") or "")}</td>'  # noqa: E501
            f'<td class="val">{escape(human_seconds(st.get("wall_seconds")))}</td></tr>')
    meta = (f'{len(tests)} isolated tests &middot; {escape(str(document.get("created", "")))} &middot; '
            f'pytest-isolate {escape(str(document.get("pytest_isolate_version", "")))} &middot; '
            f'schema {escape(str(document.get("schema", "")))} v{escape(str(document.get("version", "")))}')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pytest-isolate: resource usage per test</title>
<style>{_CSS}</style></head>
<body>
<h1>pytest-isolate: resource usage per test</h1>
<p class="meta">{meta}</p>
<p class="legend">Click a heading to sort.<span class="key mem"></span>peak memory
<span class="key cpu"></span>CPU time (user+system)<span class="key limit-key"></span> limit in force</p>
<table id="isolate-stats" data-sorted="">
<thead><tr><th data-key="nodeid" data-type="text">test</th><th data-key="outcome" data-type="text">outcome</th>
<th data-key="mem" data-type="num">peak memory</th><th data-key="cpu" data-type="num">CPU time</th>
<th data-key="wall" data-type="num">wall</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<script>{_JS}</script>
</body></html>
"""
