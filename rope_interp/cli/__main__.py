"""`python -m rope_interp.cli ...` (what `torchrun -m rope_interp.cli` runs)."""

import sys

from rope_interp.cli import main

sys.exit(main())
