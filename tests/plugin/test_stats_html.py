"""``--isolate-html`` rendered by a real headless Chromium."""
from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from ..conftest import skip_unless

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: Flags that keep a headless run hermetic: no sandbox (we run as root in
#: CI containers), no GPU, nothing fetched from the network, a private profile.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-crash-reporter",
         "--window-size=1200,900")
MEM_BLUE = (0x3B, 0x6F, 0xD8)
CPU_ORANGE = (0xE0, 0x8A, 0x1E)
LIMIT_RED = (0xDD, 0x11, 0x11)


def _browser() -> Optional[str]:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class _Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.nodeids: List[str] = []
        self.mems: List[float] = []
        self.sorted: Optional[str] = None
        self.limits = 0

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-nodeid") is not None:
            self.nodeids.append(a["data-nodeid"] or "")
            self.mems.append(float(a.get("data-mem") or "-inf"))
        if tag == "table" and a.get("id") == "isolate-stats":
            self.sorted = a.get("data-sorted")
        if tag == "div" and (a.get("class") or "").split()[:1] == ["limit"]:
            self.limits += 1


def test_html_page_renders_in_headless_chromium(pytester: pytest.Pytester, full_sandbox: None,
                                                tmp_path: Path) -> None:
    browser = _browser()
    skip_unless(browser is not None, "no headless browser: install Debian's 'chromium' package")
    assert browser is not None
    try:
        from PIL import Image
    except ImportError:
        skip_unless(False, "Pillow is not installed (pip install -e '.[test]')")
        raise
    pytester.makepyfile("""
        import pytest

        @pytest.mark.isolated(memory="200M", cpu_time=30)
        def test_big():
            hog = b"x" * (60 << 20)
            sum(range(300000))

        @pytest.mark.isolated
        def test_small():
            pass

        @pytest.mark.isolated
        @pytest.mark.parametrize("v", ["<b>&'\\"</b>"], ids=["<b>&'\\"</b>"])
        def test_escaped(v):
            hog = b"x" * (20 << 20)

        @pytest.mark.isolated
        def test_fails():
            assert False
    """)
    result = pytester.runpytest_subprocess("--isolate-html", "page/stats.html", "--isolate-json", "stats.json",
                                           "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=3, failed=1)
    page = pytester.path / "page" / "stats.html"
    result.stdout.fnmatch_lines([f"pytest-isolate: wrote HTML stats of 4 isolated tests to {page}"])
    source = page.read_text()
    for external in ("http://", "https://", "<link", " src="):
        assert external not in source, external  # self-contained: nothing is fetched
    expected = [r["nodeid"] for r in json.loads((pytester.path / "stats.json").read_text())["tests"]]
    assert len(expected) == 4

    common = (browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}")
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    rows = _Rows()
    rows.feed(dom)
    assert sorted(rows.nodeids) == sorted(expected)
    assert rows.sorted == "mem:desc"  # the script ran and sorted the rows
    assert rows.mems == sorted(rows.mems, reverse=True)
    assert rows.nodeids[0].endswith("::test_big")
    assert rows.limits == 2  # test_big's memory and CPU-time limits
    assert "<b>&amp;'\"</b>" not in dom  # the parametrize id stayed text

    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1200, 900)
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"
        present = {c for _, c in colours}
    assert MEM_BLUE in present and CPU_ORANGE in present, "no memory/CPU bars in the screenshot"
    assert LIMIT_RED in present, "no limit line in the screenshot"


#: Row backgrounds the page gives a growth and a shrink, and the totals row's.
GROWTH_RED = (0xFD, 0xE3, 0xE0)
TOTALS_VIOLET = (0xE9, 0xE4, 0xFB)

CHANGING = """
import os, pytest

@pytest.mark.isolated
def test_grows():
    hog = b"x" * (int(os.environ["ALLOC_MIB"]) << 20)

@pytest.mark.isolated
def test_steady():
    hog = b"x" * (20 << 20)

if os.environ.get("SECOND_RUN"):
    @pytest.mark.isolated
    def test_new():
        pass
"""


class _Page(HTMLParser):
    """Rows (visible or not), header keys, cell texts by class, the totals."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: List[Dict[str, Optional[str]]] = []
        self.heads: List[str] = []
        self.cells: List[Tuple[str, str, str]] = []  # (nodeid or "total", class, text)
        self.table: Dict[str, Optional[str]] = {}
        self.ids: Dict[str, str] = {}
        self._where = ""
        self._cell: Optional[Tuple[str, str]] = None
        self._id: Optional[str] = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == "isolate-stats":
            self.table = a
        if tag == "th" and a.get("data-key"):
            self.heads.append(a["data-key"] or "")
        if tag == "tr" and a.get("data-nodeid") is not None:
            self.rows.append(a)
            self._where = a["data-nodeid"] or ""
        if tag == "tr" and a.get("id") == "isolate-totals":
            self._where = "total"
        if tag == "td":
            self._cell, self._text = (self._where, a.get("class") or ""), ""
        if a.get("id"):
            self._id, self._text = a["id"], ""

    def handle_data(self, data: str) -> None:
        self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append((*self._cell, self._text.strip()))
            self._cell = None
        if self._id is not None and tag in ("td", "span", "p"):
            self.ids[self._id] = self._text.strip()
            self._id = None


def _dom(browser: str, profile: Path, url: str) -> _Page:
    dom = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    page = _Page()
    page.feed(dom)
    return page


def test_html_page_shows_the_baseline_the_change_and_totals(pytester: pytest.Pytester, full_sandbox: None,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    browser = _browser()
    skip_unless(browser is not None, "no headless browser: install Debian's 'chromium' package")
    assert browser is not None
    from PIL import Image

    from pytest_isolate.figures import human_bytes, human_seconds

    pytester.makepyfile(test_it=CHANGING)
    monkeypatch.setenv("ALLOC_MIB", "20")
    pytester.runpytest_subprocess("--isolate-json", "base.json", "-p", "no:cacheprovider",
                                  timeout=120).assert_outcomes(passed=2)
    monkeypatch.setenv("ALLOC_MIB", "60")
    monkeypatch.setenv("SECOND_RUN", "1")
    result = pytester.runpytest_subprocess("--isolate-compare", "base.json", "--isolate-html", "page.html",
                                           "--isolate-json", "new.json", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=3)
    records = {r["nodeid"].split("::")[1]: r for r in json.loads((pytester.path / "new.json").read_text())["tests"]}
    url = (pytester.path / "page.html").as_uri()
    profile = tmp_path / "profile"

    page = _dom(browser, profile, url)
    assert page.heads == ["nodeid", "outcome", "mem", "memold", "memchange", "cpu", "cpuold", "cpuchange", "wall"]
    assert page.table["data-sorted"] == "memchange:desc"  # the script ran: largest growth first
    assert [r["data-nodeid"] for r in page.rows] == [f"test_it.py::{n}" for n in ("test_grows", "test_steady",
                                                                                  "test_new")]
    column = {key: i for i, key in enumerate(page.heads)}
    row: Dict[str, List[Tuple[str, str]]] = {}
    for where, cls, text in page.cells:
        row.setdefault(where.split("::")[-1], []).append((cls, text))
    grows, steady = records["test_grows"], records["test_steady"]
    old = grows["baseline"]["peak_memory_bytes"]
    assert row["test_grows"][column["memold"]] == ("num", human_bytes(old))
    growth = grows["stats"]["peak_memory_bytes"] - old
    assert row["test_grows"][column["memchange"]] == ("change up",
                                                      f"+{human_bytes(growth)} = {growth / old * 100:+.1f}%")
    assert row["test_steady"][column["memchange"]] == ("change noise", "within noise")
    assert row["test_new"][column["memold"]] == ("num", "") and row["test_new"][column["memchange"]][0] == "change na"
    assert page.ids["isolate-baseline"] == ("compared with base.json; changes under 1.0 MiB of peak memory or 0.10s "
                                            "of CPU time are within measurement noise")
    source = grows["stats"]["peak_memory_bytes_source"]
    assert page.ids["isolate-sources"].startswith(f"peak memory from: {source}; CPU time (user + system) from: ")
    assert source not in "".join(text for _, cls, text in page.cells if cls == "barcell")  # no per-row label
    mems = [r["stats"]["peak_memory_bytes"] for r in records.values()]
    assert page.ids["isolate-total-label"] == "total of 3 tests"
    assert page.ids["isolate-total-outcomes"] == "3 passed"
    assert page.ids["isolate-total-mem"] == human_bytes(sum(mems))
    assert page.ids["isolate-total-wall"] == human_seconds(sum(r["stats"]["wall_seconds"] for r in records.values()))
    assert page.ids["isolate-total-peak_memory_bytes-change"].endswith("(2 tests with a baseline)")

    filtered = _dom(browser, profile, url + "#filter=steady")
    assert [r["data-nodeid"] for r in filtered.rows if r.get("hidden") is None] == ["test_it.py::test_steady"]
    assert filtered.ids["isolate-shown"] == "1 of 3 tests shown"
    assert filtered.ids["isolate-total-label"] == "total of 1 shown"
    assert filtered.ids["isolate-total-mem"] == human_bytes(steady["stats"]["peak_memory_bytes"])
    assert filtered.ids["isolate-total-peak_memory_bytes-change"] == "within noise"

    shot = tmp_path / "shot.png"
    subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None
    present = {c for _, c in colours}
    assert GROWTH_RED in present, "no growth cell in the screenshot (the change column)"
    assert TOTALS_VIOLET in present, "no totals row in the screenshot"
    assert MEM_BLUE in present and CPU_ORANGE in present
