"""``--isolate-html`` rendered by a real headless Chromium (issue #5)."""
from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import List, Optional, Tuple

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
