"""``python -m images [NAME ...] [--all] [--rebuild]``: what ``./dev images`` runs (see images/build.py)."""

from __future__ import annotations

import sys

from images.build import main

if __name__ == "__main__":
    sys.exit(main())
