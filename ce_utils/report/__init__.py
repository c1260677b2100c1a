"""The report layer: every figure and table from the committed result CSVs alone (notebook 05).

Reads ``results/<profile>/*.csv`` only -- no model, no data directory, no torch -- and imports nothing of
ce_utils but ``core.config`` and ``core.io``. Modules:

* :mod:`~ce_utils.report.tables` (schemas, Markdown / LaTeX, manifest), :mod:`~ce_utils.report.style`
  (matplotlib, one colour per system), :mod:`~ce_utils.report.build` (:func:`make_all`);
* paper 1: :mod:`~ce_utils.report.paper1` (layer probe, another CE, the CE's training curve),
  :mod:`~ce_utils.report.de2ce` (DE-k CE, pipelines);
* paper 2: :mod:`~ce_utils.report.paper2` and :mod:`~ce_utils.report.reference` (query students, paper 2's
  table and geometry);
* both: :mod:`~ce_utils.report.curves` (learning curves), :mod:`~ce_utils.report.budgets` (the budget sweep),
  :mod:`~ce_utils.report.speed` and :mod:`~ce_utils.report.pareto` (speed, backends, quality vs speed),
  :mod:`~ce_utils.report.headline`, :mod:`~ce_utils.report.verdicts` (the verdict table of the README).
"""

from ce_utils.report.budgets import (budget_headline_table, budget_runs, budgets_table, draw_budgets, minutes_per_step,
                                     paper_level, recipe_rates, tuned_rates)
from ce_utils.report.ce_seeds import seeded_guard
from ce_utils.report.build import check_options, figure_options, make_all
from ce_utils.report.curves import curve_summary, draw_query_curve
from ce_utils.report.de2ce import draw_de2ce, draw_pipeline, pipeline_latency_table
from ce_utils.report.headline import headline_table
from ce_utils.report.paper1 import (draw_layer_probe, draw_learning_curve, other_ce_summary, probe_lines,
                                    probe_summary)
from ce_utils.report.paper2 import geometry_summary, geometry_table
from ce_utils.report.pareto import join_speed, pareto_front, quality_points, speed_lookup
from ce_utils.report.speed import backend_table, flop_goal_table
from ce_utils.report.style import setup_matplotlib, system_color
from ce_utils.report.verdicts import verdict_table
from ce_utils.report.tables import (SCHEMAS, SchemaError, check_manifest, read_result, read_results, to_latex,
                                    to_markdown)

__all__ = ["SCHEMAS", "SchemaError", "backend_table", "budget_headline_table", "budget_runs", "budgets_table", "check_manifest",
           "check_options", "curve_summary", "draw_budgets", "draw_de2ce", "draw_layer_probe", "draw_learning_curve",
           "draw_pipeline", "draw_query_curve", "figure_options", "flop_goal_table", "geometry_summary",
           "geometry_table", "headline_table", "verdict_table", "join_speed", "make_all", "minutes_per_step", "other_ce_summary", "paper_level", "pareto_front", "seeded_guard",
           "pipeline_latency_table", "probe_lines", "probe_summary", "quality_points", "read_result", "read_results",
           "recipe_rates", "setup_matplotlib", "speed_lookup", "system_color", "to_latex", "to_markdown", "tuned_rates"]
