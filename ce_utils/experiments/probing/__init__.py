"""Layer probing (Ananthakrishnan et al., 2025): are a cross encoder's early layers useful

See the modules of this package: probe, measures, other_ce."""

from ce_utils.experiments.probing.probe import *  # noqa: F401,F403
from ce_utils.experiments.probing.measures import *  # noqa: F401,F403
from ce_utils.experiments.probing.other_ce import *  # noqa: F401,F403
