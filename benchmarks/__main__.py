"""``./dev bench NAME [ARGS]``: run the benchmark ``benchmarks/NAME.py``; without NAME, list them."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    """Names of the benchmark modules (each exposes ``main(argv) -> int``)."""
    return sorted(
        module.name for module in pkgutil.iter_modules([str(Path(__file__).parent)]) if module.name[0] != "_"
    )


def main(argv: list[str]) -> int:
    """Dispatch to ``benchmarks.<NAME>.main(rest)``."""
    names = available()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in names:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown benchmark {argv[0]!r}", file=sys.stderr)
        print(f"usage: ./dev bench NAME [ARGS]  (NAME: {', '.join(names)}; NAME --help: options)")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"benchmarks.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
