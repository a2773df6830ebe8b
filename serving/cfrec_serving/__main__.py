"""``python -m cfrec_serving``: the command line of ``cfrec_serving.cli``."""

import sys

from cfrec_serving.cli import main

sys.exit(main())
