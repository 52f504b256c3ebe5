"""``python -m housing`` is the ``housing`` command."""

from housing.cli import main

raise SystemExit(main())
