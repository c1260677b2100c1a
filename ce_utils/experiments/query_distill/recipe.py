"""Paper 2's recipe on your own retriever: keep the teacher for the documents, and distil a small query
encoder from a subset of its layers (best: bottom + top) with MSE toward the teacher's query embeddings,
on unlabelled query text only. No profile needed.

    from ce_utils.experiments.query_distill import distill_query_encoder
    student = distill_query_encoder("sentence-transformers/all-MiniLM-L6-v2", queries, layers=[0, -1],
                                    steps=1000, out="my_student/")
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

from sentence_transformers import SentenceTransformer

from ce_utils.core.config import ConfigError
from ce_utils.core.encode import weights_fingerprint
from ce_utils.core.io import save_model
from ce_utils.core.models import load_sentence_transformer
from ce_utils.core.students import layer_subset_student
from ce_utils.core.train import QUERY_STUDENT_DEFAULTS, teacher_targets, train_mse


def distill_query_encoder(teacher: str | SentenceTransformer, queries: Sequence[str], layers: Sequence[int] = (0, -1),
                          steps: int | None = None, epochs: float = 1, batch_size: int = 128,
                          learning_rate: float = 1e-4, warmup_ratio: float = 0.1, seed: int = 42,
                          out: str | Path | None = None, cache_dir: str | Path | None = None,
                          device: str | None = None) -> SentenceTransformer:
    """A query student of ``teacher`` (a SentenceTransformer, a local folder or a hub id) built from its
    embeddings and ``layers`` (negative = from the top), aligned with the teacher's embeddings of ``queries``
    for ``steps`` optimizer steps (``None``: ``epochs`` passes over the queries). Saved to ``out`` when given
    (a plain sentence-transformers folder: ``SentenceTransformer(out)`` loads it). Index your documents with
    the teacher; encode queries with the student."""
    queries = [q for q in queries if q and q.strip()]
    if not queries:
        raise ConfigError("distill_query_encoder needs unlabelled query texts; none were given.")
    if steps is not None and int(steps) < 1:
        raise ConfigError(f"steps must be >= 1 (or None for whole epochs), not {steps!r}.")
    if isinstance(teacher, (str, Path)):
        teacher = load_sentence_transformer(str(teacher), device=device)
    student = layer_subset_student(teacher, list(layers), seed=seed)
    targets = teacher_targets(teacher, queries, cache_dir, weights_fingerprint(teacher), teacher.max_seq_length,
                              name="queries")
    tc = {"batch_size": int(batch_size), "learning_rate": float(learning_rate), "warmup_ratio": float(warmup_ratio),
          "max_steps": int(steps) if steps else -1, "epochs": float(epochs)}
    with tempfile.TemporaryDirectory(prefix="distill-") as work:
        train_mse(student, queries, targets, tc, seed, device, Path(work) / "trainer", defaults=QUERY_STUDENT_DEFAULTS)
    if out is not None:
        save_model(student, out)
    return student
