"""``python -m model COMMAND`` runs the ``housing`` command (the trainer image's entrypoint)."""

import sys

from housing.cli import main

sys.exit(main())
