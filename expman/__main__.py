"""``python -m expman`` is the ``expman`` command."""

from expman.cli import main

raise SystemExit(main())
