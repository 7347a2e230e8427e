"""``--isolate-html``: one self-contained page of per-test resource bars.

Everything is inline (CSS, script, data); the page loads nothing from the
network, so it can be archived as a CI artifact and opened anywhere.  Rows
and totals are rendered here, so the page is readable without JavaScript;
the script sorts (click a column heading), filters (the box, or
``#filter=<text>`` in the address) and recomputes the totals of the rows
shown.  With a baseline (``--isolate-compare`` or the last run) each figure
has its previous value and the change beside it, and the page starts
sorted by the change in peak memory; changes under the noise floor read
"within noise".  Bars of one column share a scale that covers every figure
and every limit near them, so a limit is a red line across the track at
its true place; a limit far above every figure is a dashed line at the
right edge.  Where every figure comes from is said once, in the legend; a
row names its source only where it differs.
"""
from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .figures import (
    CPU_NOISE_SECONDS,
    MEMORY_NOISE_BYTES,
    change,
    cpu_seconds,
    human_bytes,
    human_seconds,
    noise_floor_text,
)

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2330; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
.meta, .legend { color: #5a6272; margin: .2em 0 .6em; }
.tools { margin: .4em 0 .8em; }
#isolate-filter { font: inherit; padding: .25em .5em; width: 24em; border: 1px solid #c9cfda; border-radius: 3px; }
#isolate-shown { color: #5a6272; margin-left: .8em; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; cursor: pointer; user-select: none; border-bottom: 2px solid #c9cfda; padding: .35em .5em;
     white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td { border-bottom: 1px solid #e6e9ef; padding: .3em .5em; vertical-align: middle; }
td.nodeid { font-family: ui-monospace, monospace; overflow-wrap: anywhere; min-width: 16em; }
td.outcome.passed { color: #17803d; } td.outcome.failed, td.outcome.error { color: #b42318; }
td.outcome.skipped, td.outcome.xfailed, td.outcome.xpassed, td.outcome.rerun { color: #8a6d00; }
.barcell { width: 17%; min-width: 8em; }
.track { position: relative; height: 14px; background: #eef1f6; border-radius: 3px; }
.bar { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 3px; min-width: 1px; }
.bar.mem, .key.mem { background: #3b6fd8; } .bar.cpu, .key.cpu { background: #e08a1e; }
.limit { position: absolute; top: -3px; bottom: -3px; width: 2px; background: #d11; }
.limit.off { background: repeating-linear-gradient(#d11 0 3px, transparent 3px 5px); }
.key { display: inline-block; width: 14px; height: 10px; margin: 0 .3em 0 1em; border-radius: 2px; }
.key.limit-key { background: #d11; width: 2px; height: 14px; vertical-align: middle; }
.val, .num { font-variant-numeric: tabular-nums; font-size: .9em; color: #39404d; white-space: nowrap; }
.src { color: #8a91a0; font-size: .8em; }
td.change { font-variant-numeric: tabular-nums; font-size: .9em; min-width: 6em; }
td.change.up { background: #fde3e0; color: #8f1d12; }
td.change.down { background: #dcf3e3; color: #14532d; }
td.change.noise, td.change.na { color: #8a91a0; }
tfoot td { background: #e9e4fb; border-top: 2px solid #5b45b0; font-weight: 600; }
tr[hidden] { display: none; }
"""

_JS = """
(function () {
  var table = document.getElementById("isolate-stats");
  var body = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  function value(row, key, type) {
    var v = row.getAttribute("data-" + key);
    if (type === "num") { return v === "" || v === null ? -Infinity : parseFloat(v); }
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
    Array.prototype.forEach.call(heads, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
    table.setAttribute("data-sorted", key + ":" + dir);
  }
  Array.prototype.forEach.call(heads, function (th) {
    if (!th.hasAttribute("data-key")) { return; }
    th.addEventListener("click", function () {
      var now = th.getAttribute("aria-sort");
      sortBy(th, now === "descending" ? "asc" : "desc");
    });
  });
  function bytes(n) {
    var units = ["B", "KiB", "MiB", "GiB"], i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i];
  }
  function seconds(s) { return s.toFixed(2) + "s"; }
  var fmt = {mem: bytes, memold: bytes, cpu: seconds, cpuold: seconds, wall: seconds};
  var total = document.getElementById("isolate-total-label");
  var shown = document.getElementById("isolate-shown");
  function retotal(rows) {
    Object.keys(fmt).forEach(function (key) {
      var cell = document.getElementById("isolate-total-" + key);
      if (!cell) { return; }
      var sum = 0, n = 0;
      rows.forEach(function (r) { var v = r.getAttribute("data-" + key); if (v) { sum += parseFloat(v); n++; } });
      cell.textContent = n ? fmt[key](sum) : "n/a";
    });
    [["mem", "memold", "peak_memory_bytes", bytes], ["cpu", "cpuold", "cpu_seconds", seconds]].forEach(function (c) {
      var cell = document.getElementById("isolate-total-" + c[2] + "-change");
      if (!cell) { return; }
      var now = 0, before = 0, n = 0;
      rows.forEach(function (r) {
        var a = r.getAttribute("data-" + c[0]), b = r.getAttribute("data-" + c[1]);
        if (a && b) { now += parseFloat(a); before += parseFloat(b); n++; }
      });
      var diff = now - before, floor = parseFloat(table.getAttribute("data-noise-" + c[0])), kind = "na", text = "";
      if (n && Math.abs(diff) < floor) { kind = "noise"; text = "within noise"; }
      else if (n) {
        kind = diff > 0 ? "up" : "down";
        text = (diff > 0 ? "+" : "-") + c[3](Math.abs(diff));
        if (before > 0) { text += " = " + (diff >= 0 ? "+" : "") + (diff / before * 100).toFixed(1) + "%"; }
        if (n < rows.length) { text += " (" + n + (n === 1 ? " test" : " tests") + " with a baseline)"; }
      }
      cell.className = "change " + kind;
      cell.textContent = text;
    });
    var counts = {};
    rows.forEach(function (r) { var o = r.getAttribute("data-result"); counts[o] = (counts[o] || 0) + 1; });
    document.getElementById("isolate-total-outcomes").textContent =
      Object.keys(counts).sort().map(function (o) { return counts[o] + " " + o; }).join(", ");
    total.textContent = "total of " + rows.length + " shown";
  }
  var box = document.getElementById("isolate-filter");
  function filter(text) {
    var needle = text.toLowerCase(), rows = [];
    Array.prototype.forEach.call(body.rows, function (r) {
      var hit = (r.getAttribute("data-nodeid") + " " + r.getAttribute("data-outcome")).toLowerCase()
        .indexOf(needle) >= 0;
      if (hit) { r.removeAttribute("hidden"); rows.push(r); } else { r.setAttribute("hidden", ""); }
    });
    table.setAttribute("data-filter", text);
    shown.textContent = rows.length + " of " + body.rows.length + " tests shown";
    retotal(rows);
  }
  box.addEventListener("input", function () { filter(box.value); });
  var hash = decodeURIComponent(window.location.hash || "");
  if (hash.indexOf("#filter=") === 0) { box.value = hash.slice(8); filter(box.value); }
  sortBy(table.querySelector('th[data-key="' + table.getAttribute("data-initial-sort") + '"]'), "desc");
})();
"""


#: A limit more than this many times the column's largest figure is drawn
#: at the right edge (dashed) instead of shrinking every bar to a sliver.
OFF_SCALE = 4.0


def _num(value: Optional[float]) -> str:
    return "" if value is None else repr(float(value))


def _bar(kind: str, value: Optional[float], limit: Optional[float], scale: float,
         fmt: Callable[[Optional[float]], str], note: str) -> str:
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
    parts.append(f'<span class="val">{escape(text)}</span>')
    if note:
        parts.append(f' <span class="src">{escape(note)}</span>')
    return "".join(parts)


def _scale(figures: List[Optional[float]], limits: List[Optional[float]]) -> float:
    """The column's full width: the largest figure, or a limit if one is
    near enough (within ``OFF_SCALE`` times it) for its line to mean something."""
    top = max([v for v in figures if v is not None] or [0.0])
    near = [v for v in limits if v is not None and (top == 0 or v <= top * OFF_SCALE)]
    return max([top, *near])


def _sum(values: Sequence[Optional[float]]) -> Optional[float]:
    got = [v for v in values if v is not None]
    return sum(got) if got else None


def _cpu_source(stats: Mapping[str, Any]) -> str:
    user = str(stats.get("cpu_user_seconds_source") or "unavailable")
    system = str(stats.get("cpu_system_seconds_source") or "unavailable")
    return user if user == system else f"{user} + {system}"


def _common(sources: List[str]) -> Tuple[str, Dict[str, int]]:
    counts = Counter(sources)
    return (counts.most_common(1)[0][0] if counts else ""), dict(counts)


def _tests(n: int) -> str:
    return f"{n} test" if n == 1 else f"{n} tests"


def _legend_sources(what: str, common: str, counts: Dict[str, int]) -> str:
    others = sorted(s for s in counts if s != common)
    text = f"{what}: {common}"
    if others:
        text += " (" + "; ".join(f"{_tests(counts[s])}: {s}" for s in others) + ", named on their rows)"
    return escape(text)


def _total_change(key: str, news: List[Optional[float]], olds: List[Optional[float]]) -> str:
    """The change of a column's total, over the tests that have both figures."""
    both = [(n, o) for n, o in zip(news, olds) if n is not None and o is not None]
    if not both:
        return f'<td class="change na" id="isolate-total-{key}-change"></td>'
    moved = change(key, sum(n for n, _ in both), sum(o for _, o in both))
    text = moved.text + ("" if len(both) == len(news) else f" ({_tests(len(both))} with a baseline)")
    return f'<td class="change {moved.kind}" id="isolate-total-{key}-change">{escape(text)}</td>'


def _change_cell(key: str, new: Optional[float], old: Optional[float]) -> Tuple[str, str]:
    """The ``change`` cell and its sort value (percent; 0 within noise)."""
    moved = change(key, new, old)
    sort = "" if moved.percent is None else repr(round(moved.percent, 3))
    return f'<td class="change {moved.kind}">{escape(moved.text)}</td>', sort


def render(document: Mapping[str, Any]) -> str:
    """The page for one ``--isolate-json`` document."""
    tests: List[Dict[str, Any]] = list(document.get("tests", []))
    mems = [t["stats"].get("peak_memory_bytes") for t in tests]
    cpus = [cpu_seconds(t["stats"]) for t in tests]
    olds = [t.get("baseline") or {} for t in tests]
    mem_olds = [b.get("peak_memory_bytes") for b in olds]
    cpu_olds = [b.get("cpu_seconds") for b in olds]
    walls = [t["stats"].get("wall_seconds") for t in tests]
    compared = any(t.get("baseline") for t in tests)
    mem_limits = [t["limits"].get("memory_bytes") for t in tests]
    cpu_limits = [t["limits"].get("cpu_time_seconds") for t in tests]
    mem_scale, cpu_scale = _scale(mems, mem_limits), _scale(cpus, cpu_limits)
    mem_src, mem_counts = _common([str(t["stats"].get("peak_memory_bytes_source") or "unavailable") for t in tests])
    cpu_src, cpu_counts = _common([_cpu_source(t["stats"]) for t in tests])
    rows = []
    for i, t in enumerate(tests):
        st = t["stats"]
        outcome = t.get("outcome") or "passed"
        shown = outcome + (f" ({t['status']})" if t.get("status") else "")
        warn = "".join(f'<div class="src">{escape(str(w))}</div>' for w in t.get("warnings") or [])
        mem_note = "" if st.get("peak_memory_bytes_source") == mem_src else str(st.get("peak_memory_bytes_source"))
        cpu_note = "" if _cpu_source(st) == cpu_src else _cpu_source(st)
        attrs = (f'data-nodeid="{escape(t["nodeid"])}" data-outcome="{escape(shown)}" data-result="{escape(outcome)}" '
                 f'data-mem="{_num(mems[i])}" '
                 f'data-cpu="{_num(cpus[i])}" data-wall="{_num(walls[i])}"')
        cells = [f'<td class="nodeid">{escape(t["nodeid"])}{warn}</td>',
                 f'<td class="outcome {escape(outcome)}">{escape(shown)}</td>',
                 f'<td class="barcell">{_bar("mem", mems[i], mem_limits[i], mem_scale, human_bytes, mem_note)}</td>']
        if compared:
            cell, sort = _change_cell("peak_memory_bytes", mems[i], mem_olds[i])
            attrs += f' data-memold="{_num(mem_olds[i])}" data-memchange="{sort}"'
            cells += [f'<td class="num">{escape(human_bytes(mem_olds[i]) if mem_olds[i] is not None else "")}</td>',
                      cell]
        cells.append(f'<td class="barcell">{_bar("cpu", cpus[i], cpu_limits[i], cpu_scale, human_seconds, cpu_note)}'
                     '</td>')
        if compared:
            cell, sort = _change_cell("cpu_seconds", cpus[i], cpu_olds[i])
            attrs += f' data-cpuold="{_num(cpu_olds[i])}" data-cpuchange="{sort}"'
            cells += [f'<td class="num">{escape(human_seconds(cpu_olds[i]) if cpu_olds[i] is not None else "")}'
                      '</td>', cell]
        cells.append(f'<td class="num">{escape(human_seconds(walls[i]))}</td>')
        rows.append(f'<tr {attrs}>{"".join(cells)}</tr>')

    def head(key: str, text: str, kind: str = "num") -> str:
        return f'<th data-key="{key}" data-type="{kind}">{text}</th>'

    heads = [head("nodeid", "test", "text"), head("outcome", "outcome", "text"), head("mem", "peak memory")]
    if compared:
        heads += [head("memold", "before"), head("memchange", "change")]
    heads.append(head("cpu", "CPU time (user+system)"))
    if compared:
        heads += [head("cpuold", "before"), head("cpuchange", "change")]
    heads.append(head("wall", "wall"))

    def total(key: str, value: Optional[float], fmt: Callable[[Optional[float]], str]) -> str:
        return f'<td class="num" id="isolate-total-{key}">{escape(fmt(value))}</td>'

    outcomes = Counter(t.get("outcome") or "passed" for t in tests)
    foot = [f'<td id="isolate-total-label">total of {_tests(len(tests))}</td>',
            f'<td id="isolate-total-outcomes">{escape(", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())))}'
            '</td>',
            total("mem", _sum(mems), human_bytes)]
    if compared:
        foot += [total("memold", _sum(mem_olds), human_bytes), _total_change("peak_memory_bytes", mems, mem_olds)]
    foot.append(total("cpu", _sum(cpus), human_seconds))
    if compared:
        foot += [total("cpuold", _sum(cpu_olds), human_seconds), _total_change("cpu_seconds", cpus, cpu_olds)]
    foot.append(total("wall", _sum(walls), human_seconds))

    base = document.get("baseline")
    baseline = (f"compared with {escape(str(base))}; {escape(noise_floor_text())}" if compared else
                "no baseline: the next run compares with this one (or give --isolate-compare)")
    meta = (f'{len(tests)} isolated tests &middot; {escape(str(document.get("created", "")))} &middot; '
            f'pytest-isolate {escape(str(document.get("pytest_isolate_version", "")))} &middot; '
            f'schema {escape(str(document.get("schema", "")))} v{escape(str(document.get("version", "")))}')
    sources = (f'{_legend_sources("peak memory from", mem_src, mem_counts)}; '
               f'{_legend_sources("CPU time (user + system) from", cpu_src, cpu_counts)}')
    initial = "memchange" if compared else "mem"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pytest-isolate: resource usage per test</title>
<style>{_CSS}</style></head>
<body>
<h1>pytest-isolate: resource usage per test</h1>
<p class="meta">{meta}</p>
<p class="meta" id="isolate-baseline">{baseline}</p>
<p class="legend">Click a heading to sort.<span class="key mem"></span>peak memory
<span class="key cpu"></span>CPU time (user+system)<span class="key limit-key"></span> limit in force</p>
<p class="legend" id="isolate-sources">{sources}</p>
<p class="tools"><input id="isolate-filter" type="search" placeholder="filter: part of a test id or outcome"
aria-label="filter tests"><span id="isolate-shown">{len(tests)} of {len(tests)} tests shown</span></p>
<table id="isolate-stats" data-sorted="" data-filter="" data-initial-sort="{initial}"
data-noise-mem="{MEMORY_NOISE_BYTES}" data-noise-cpu="{CPU_NOISE_SECONDS}">
<thead><tr>{"".join(heads)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
<tfoot><tr id="isolate-totals">{"".join(foot)}</tr></tfoot></table>
<script>{_JS}</script>
</body></html>
"""
