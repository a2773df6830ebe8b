"""``python -m cfrec_assets``: the serving command line (``cfrec_serving.cli``), kept under the
name the README and the app's scripts use."""

import sys

from cfrec_serving.cli import main

sys.exit(main())
