"""Reusable logic for the cross-encoder embedding and query-encoder distillation reproductions.

Notebooks hold the narrative and the plots; everything they compute lives here.
"""

__version__ = "0.1.0"

from ce_utils.core.config import ConfigError, data_dir, load_profile, repo_root  # noqa: F401
