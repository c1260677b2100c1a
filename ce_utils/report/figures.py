"""The names notebooks 01 and 02 draw with (``from ce_utils.report import figures``): the report layer's public
functions, re-exported. New code imports :mod:`ce_utils.report` itself."""

from ce_utils.report import *  # noqa: F401,F403
from ce_utils.report import __all__  # noqa: F401
