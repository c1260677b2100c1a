"""Asymmetric query-encoder distillation by embedding alignment (Wang & Lyu, 2023).

See the modules of this package: students, retention, recipe (the recipe on your own retriever)."""

from ce_utils.experiments.query_distill.students import *  # noqa: F401,F403
from ce_utils.experiments.query_distill.retention import *  # noqa: F401,F403
from ce_utils.experiments.query_distill.recipe import *  # noqa: F401,F403
