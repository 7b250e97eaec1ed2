"""``python -m infinitetalk``: see :mod:`infinitetalk.cli`."""

from .cli import main

raise SystemExit(main())
