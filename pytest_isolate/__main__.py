"""``python -m pytest_isolate``: what this host can isolate, and how to fix
what it cannot (the same report as ``pytest --isolate-doctor``)."""
from __future__ import annotations

import sys


def main() -> int:
    import isolate_runtime

    from .host import doctor_report

    sys.stdout.write(doctor_report(isolate_runtime.probe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
