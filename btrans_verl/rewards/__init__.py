"""Reward logic for math RL: answer extraction/equivalence, reward schemes, majority vote.

Pure Python and independent of verl; the verl reward-manager adapters wrap these.
"""

from btrans_verl.rewards.majority_vote import (
    GroupMetrics,
    GroupVoteResult,
    VoteBucket,
    aggregate_group_metrics,
    majority_vote_group,
)
from btrans_verl.rewards.math_answer import (
    DEFAULT_TIMEOUT_S,
    answers_equivalent,
    extract_boxed_answer,
    fast_equivalence,
    normalize_answer,
    reference_answer,
)
from btrans_verl.rewards.schemes import (
    Outcome,
    ScoreResult,
    available_schemes,
    get_scheme,
    grade_answer,
    register_scheme,
    score_response,
)
from btrans_verl.rewards.time_limit import (
    ProcessTimeLimiter,
    TimeLimitExceeded,
    run_with_time_limit,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "GroupMetrics",
    "GroupVoteResult",
    "Outcome",
    "ProcessTimeLimiter",
    "ScoreResult",
    "TimeLimitExceeded",
    "VoteBucket",
    "aggregate_group_metrics",
    "answers_equivalent",
    "available_schemes",
    "extract_boxed_answer",
    "fast_equivalence",
    "get_scheme",
    "grade_answer",
    "majority_vote_group",
    "normalize_answer",
    "reference_answer",
    "register_scheme",
    "run_with_time_limit",
    "score_response",
]
