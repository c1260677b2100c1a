"""The cross encoder: loaded from the hub (paper profile) or trained here (default profile).

See the modules of this package: train, data, seeds (the CE's gain over training seeds)."""

from ce_utils.experiments.cross_encoder.train import *  # noqa: F401,F403
from ce_utils.experiments.cross_encoder.data import *  # noqa: F401,F403
from ce_utils.experiments.cross_encoder.seeds import CE_SEEDS_CSV, run_seeds  # noqa: F401
