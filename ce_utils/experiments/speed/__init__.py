"""Query-encoding speed (notebook 04): latency and throughput of the full DE, its light students and the CE.

Both papers sell their small encoders by online speed: only the *query* is encoded at search
time, so the cost that matters is encoding one query (or a batch of queries). This package times

* ``de``            -- the full dual encoder (the documents' encoder; also the teacher),
* ``de-k-ce``       -- notebook 02's DE-k CE students (k copied CE layers + one random layer),
* ``query-student`` -- notebook 03's layer-subset query students (1, 2, 3 teacher layers),
* ``ce``            -- the cross encoder, scoring one (query, document) pair (``CE (pair)``), and
  embedding the query paired with itself (``CE (self-pair)``, all CE layers, mean pooled),
* ``overhead``      -- the full DE without its layers (:func:`overhead_encoder`): the fixed per-call cost,

tokenisation included and excluded, for several batch sizes, on CPU with one thread and with every
thread, and on a GPU when there is one (fp32 and fp16), in eager PyTorch and in the inference backends of
:mod:`.backends` (int8, ONNX Runtime).

How: in each round, for each setting, the models take turns *call by call* over the same batches
(:func:`interleave`), so a burst of load on a shared machine slows every model in the same few
batches and the speed-up over the full DE -- a ratio within one pass -- survives it; the rounds are
repeated and summarised by their median and IQR (:func:`summarize_rounds`). Each call is timed with
``time.perf_counter`` (timeit's clock, garbage collector off): ``torch.utils.benchmark``'s timers run
their own warm-up calls around every measurement and cannot alternate models call by call.

Next to every measured speed-up over the full DE (same device, threads, dtype, batch size and
tokenisation setting, same run) the analytic FLOP ratio is recorded: FLOPs per item of the full
DE divided by FLOPs per item of the model (:func:`flops_per_item`), so both read "x times faster".

Modules: :mod:`.flops` (analytic FLOPs), :mod:`.backends` (inference backends and their quality),
:mod:`.encoders` (what is timed), :mod:`.build` (the profile's models), :mod:`.inputs` (queries, documents),
:mod:`.plan` (settings, schedule, interleaving), :mod:`.timing` (the timed passes), :mod:`.summary` (rounds ->
medians, IQR, bootstrap errors, speed-ups, tables).
"""

from ce_utils.experiments.speed import backends  # noqa: F401
from ce_utils.experiments.speed.build import (build_cross_encoder, build_encoders, de_k_ce_name,  # noqa: F401
                                              full_de_name, query_student_name, trained_query_student,
                                              trained_student)
from ce_utils.experiments.speed.encoders import (CE_MODES, OVERHEAD_NAME, ROLES, Encoder, backend_encoder,  # noqa: F401
                                                 backend_name, ce_encoder, overhead_encoder, st_encoder)
from ce_utils.experiments.speed.flops import flop_ratio, flops_per_item, flops_per_token  # noqa: F401
from ce_utils.experiments.speed.inputs import (document_sample, items_for, mean_tokens, query_sample,  # noqa: F401
                                               speed_section)
from ce_utils.experiments.speed.plan import DTYPES, interleave, schedule, settings  # noqa: F401
from ce_utils.experiments.speed.summary import (ROUND_KEYS, SETTING_KEYS, SPEED_COLUMNS, add_model_ids,  # noqa: F401
                                                add_round_ratios, architecture_spread, call_matrix,
                                                robust_log_se, robust_ms, summarize_rounds,
                                                summary_table)
from ce_utils.experiments.speed.timing import batch_steps, move, run_speed  # noqa: F401
