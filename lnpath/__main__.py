"""``python -m lnpath`` runs the CLI."""

import sys

from lnpath.cli import main

sys.exit(main())
