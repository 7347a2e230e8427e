"""A/B pairs of installations on the trivial suite, interleaved, paired by round.

Each pair is two interpreters (e.g. the virtualenvs of two checkouts, one
commit before a change and one after it); every round runs A and B of
every pair (A first in even rounds, B first in odd ones) on the same
generated suite with ``--isolate-all``, and the
report gives, per pair, the median per-test wall time of each side and the
median, smallest and largest of the per-round differences B - A (wall and
CPU of pytest plus everything it reaped).  Pairing by round cancels the
machine's drift, which within an hour is larger than the changes measured.

    python benchmarks/ab_pairs.py [--rounds 12] [--suite trivial] \\
        before=/path/a/bin/python:after=/path/b/bin/python [more pairs ...]

A side may add options to ``--isolate-all`` after its interpreter, each
after a ``+``: ``none=/path/bin/python+--isolate-network=none`` (the same
installation with and without a setting).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suites  # noqa: E402

Side = Tuple[str, str, List[str]]


def parse_pair(text: str) -> Tuple[Side, Side]:
    sides = text.split(":")
    if len(sides) != 2 or not all("=" in s for s in sides):
        raise SystemExit(f"pair {text!r}: expected LABEL=PYTHON[+OPTION...]:LABEL=PYTHON[+OPTION...]")
    out = []
    for side in sides:
        label, _, rest = side.partition("=")
        python, *options = rest.split("+")
        out.append((label, python, options))
    return out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--suite", default="trivial", choices=sorted(suites.SUITES))
    ap.add_argument("pairs", nargs="+", metavar="A=PYTHON[+OPTION...]:B=PYTHON[+OPTION...]")
    args = ap.parse_args()
    pairs = [parse_pair(p) for p in args.pairs]
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    runs: Dict[str, List[Tuple[float, float]]] = {}
    start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="isolate-ab-") as tmp:
        suite = suites.write_suite(Path(tmp), args.suite)
        n = suites.COUNTS[args.suite]
        for r in range(args.rounds):
            for pair in pairs:
                # A then B, next round B then A: whichever runs second in a
                # round is not favoured (or not) by what ran just before
                for label, python, options in (pair if r % 2 == 0 else pair[::-1]):
                    runs.setdefault(label, []).append(
                        suites.run_once(suite, (python, ["--isolate-all", *options]), env))
    print(f"{args.suite} ({n} tests), {args.rounds} rounds, load {start:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end; ms per test")
    for (la, _, _), (lb, _, _) in pairs:
        a, b = runs[la], runs[lb]
        wall = [(y[0] - x[0]) / n * 1e3 for x, y in zip(a, b)]
        cpu = [(y[1] - x[1]) / n * 1e3 for x, y in zip(a, b)]
        print(f"  {la} -> {lb}: wall {statistics.median(x[0] for x in a) / n * 1e3:.2f} -> "
              f"{statistics.median(y[0] for y in b) / n * 1e3:.2f}; paired difference: wall "
              f"{statistics.median(wall):+.2f} (from {min(wall):+.2f} to {max(wall):+.2f}), CPU "
              f"{statistics.median(cpu):+.2f} (from {min(cpu):+.2f} to {max(cpu):+.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
