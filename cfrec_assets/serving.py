"""The app's import path, kept stable: ``from cfrec_assets.serving import load_deployed``.

The code lives in the ``cfrec_serving`` distribution (numpy only), which the app may install alone.
"""

from cfrec_serving import *  # noqa: F403 (the public API, as listed in cfrec_serving.__all__)
from cfrec_serving import __all__  # noqa: F401
