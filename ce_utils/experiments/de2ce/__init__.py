"""DE-k CE (Ananthakrishnan et al., 2025): light dual encoders built from a cross encoder's early layers.

See the modules of this package: students, pipeline."""

from ce_utils.experiments.de2ce.students import *  # noqa: F401,F403
from ce_utils.experiments.de2ce.pipeline import *  # noqa: F401,F403
