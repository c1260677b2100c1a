"""How many steps a student needs: learning curves on dev splits (:mod:`.run`) and the budget sweep of
independent runs (:mod:`.budgets`)."""

from ce_utils.experiments.curves.run import (CURVE_CSV, DEFAULT_DEV, CurveRecorder, dev_collections, dev_scores,  # noqa: F401
                                             run_curve, run_de2ce_curve, scaled_text_counts,
                                             symmetric_dev_scores)
