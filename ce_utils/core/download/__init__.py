"""Download what a profile needs from the official sources into a data directory (``make data``).

See the modules of this package: build, sources, fetch, formats."""

from ce_utils.core.download.build import *  # noqa: F401,F403
from ce_utils.core.download.sources import *  # noqa: F401,F403
from ce_utils.core.download.fetch import *  # noqa: F401,F403
from ce_utils.core.download.formats import *  # noqa: F401,F403
