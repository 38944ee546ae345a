"""``python -m bitlaw``: the same router as the ``bitlaw`` console script."""

from bitlaw.cli import main

raise SystemExit(main())
