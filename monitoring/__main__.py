"""``python -m monitoring``: regenerate the Grafana dashboards under helm/housing-kserve/dashboards/.

``--check`` writes nothing and exits 1 when a committed dashboard differs from what the generator makes.
"""

from __future__ import annotations

import argparse
import sys

from monitoring import dashboards


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the dashboard JSON files; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m monitoring", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report dashboards that are out of date")
    args = parser.parse_args(argv)
    if args.check:
        stale = [
            stem
            for stem in dashboards.DASHBOARDS
            if not (path := dashboards.DASHBOARD_DIR / f"{stem}.json").exists()
            or path.read_text(encoding="utf-8") != dashboards.render(stem)
        ]
        for stem in stale:
            print(f"out of date: {dashboards.DASHBOARD_DIR / stem}.json (run: python -m monitoring)")
        return 1 if stale else 0
    for path in dashboards.write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
