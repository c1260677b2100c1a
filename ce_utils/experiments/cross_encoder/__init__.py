"""The cross encoder: loaded from the hub (paper profile) or trained here (default profile).

See the modules of this package: train, data."""

from ce_utils.experiments.cross_encoder.train import *  # noqa: F401,F403
from ce_utils.experiments.cross_encoder.data import *  # noqa: F401,F403
