"""pytest-benchmark: the timings a test measured, carried back from its sandbox.

The ``benchmark`` fixture adds each benchmark's timings to pytest-benchmark's
session (``config._benchmarksession.benchmarks``); at the session's end the
session prints the table, writes ``--benchmark-json``, saves
``--benchmark-autosave`` and compares.  An isolated test added them to the
sandbox's copy: the pytest process had none ("Not saving anything, no
benchmarks have been run!").

The sandbox sends, per benchmark the test ran, its iterations, its rounds'
timings (per iteration), its group, ``extra_info`` and error and skip
flags.  The pytest process makes the fixture for the item as the
``benchmark`` fixture would (its name, parameters and options are the
item's and the session's, computed here) and adds a benchmark with those
timings to its session.  Not carried: ``--benchmark-cprofile`` profiles.

pytest-benchmark's internals used (stable from 4.0 to 5.x):
``config._benchmarksession`` and its ``benchmarks``, ``options``,
``logger`` and ``disabled``, and ``BenchmarkFixture._make_stats``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

from .. import checks
from . import Adapter as Base

#: Bounds on what one test may send back.
MOST_BENCHMARKS = 1_000
#: Timings over all the benchmarks of one test: pytest keeps each as a float
#: (about 32 bytes) to the session's end, so a timing sent as "0," would
#: otherwise cost 16 times its size. 16 MiB of honest timings (about 20
#: characters each) is fewer.
MOST_TIMINGS = 1_000_000
#: No timing of one iteration is longer (pytest-benchmark sums them).
LONGEST = 1e9
#: Timings merged for an item so far.
_merged_key = pytest.StashKey[int]()


def _session(item: pytest.Item) -> Any:
    return getattr(item.config, "_benchmarksession", None)


class Adapter(Base):
    name = "benchmark"

    def __init__(self, config: pytest.Config) -> None:
        super().__init__(config)
        self.start_at = 0

    def start(self, item: pytest.Item) -> None:
        session = _session(item)
        self.start_at = len(session.benchmarks) if session is not None else 0

    def collect(self, item: pytest.Item) -> Optional[Any]:
        session = _session(item)
        if session is None:
            return None
        sent: List[Dict[str, Any]] = []
        for bench in session.benchmarks[self.start_at:]:
            fixture = bench.fixture
            sent.append({"iterations": bench.iterations, "data": list(bench.stats.data), "group": bench.group,
                         "extra_info": bench.extra_info, "has_error": bool(fixture.has_error),
                         "skipped": bool(getattr(fixture, "skipped", False))})
        return sent or None

    def merge(self, item: pytest.Item, data: Any) -> None:
        session = _session(item)
        if session is None:
            raise checks.fail("benchmarks, but pytest-benchmark's session is not running here")
        for sent in checks.listing(data, "benchmarks", most=MOST_BENCHMARKS):
            sent = checks.mapping(sent, "a benchmark")
            iterations = checks.integer(sent.get("iterations"), "a benchmark's iterations", least=1)
            sent_timings = checks.listing(sent.get("data"), "a benchmark's timings")
            counted = item.stash[_merged_key] = item.stash.get(_merged_key, 0) + len(sent_timings)
            if counted > MOST_TIMINGS:
                raise checks.fail(f"more than {MOST_TIMINGS:,} benchmark timings from one test")
            timings = [checks.number(t, "a benchmark's timing") for t in sent_timings]
            if any(t > LONGEST for t in timings):
                raise checks.fail(f"a benchmark's timing of more than {LONGEST:g} seconds")
            group = sent.get("group")
            if group is not None:
                checks.string(group, "a benchmark's group", most=1000)
            extra_info = checks.mapping(sent.get("extra_info"), "a benchmark's extra_info")
            has_error = checks.boolean(sent.get("has_error"), "a benchmark's has_error")
            if not timings and not has_error:
                # only a benchmark whose function raised has none (pytest-benchmark's JSON fails on it)
                raise checks.fail("a benchmark without timings that did not fail")
            fixture = self._fixture(item, session)
            fixture.group = group
            fixture.extra_info = extra_info
            fixture.has_error = has_error
            fixture.skipped = checks.boolean(sent.get("skipped"), "a benchmark's skipped")
            bench = fixture._make_stats(iterations)  # adds it to the session
            for timing in timings:
                bench.stats.update(timing)

    @staticmethod
    def _fixture(item: pytest.Item, session: Any) -> Any:
        """The item's ``BenchmarkFixture``, made as the ``benchmark`` fixture
        makes it."""
        from pytest_benchmark import fixture, utils

        make: Any = fixture.BenchmarkFixture
        wrap: Any = utils.NameWrapper
        marker = item.get_closest_marker("benchmark")
        options: Dict[str, Any] = dict(marker.kwargs) if marker else {}
        if "timer" in options:
            options["timer"] = wrap(options["timer"])
        return make(item, add_stats=session.benchmarks.append, logger=session.logger, warner=item.warn,
                                disabled=session.disabled, **dict(session.options, **options))
