"""K folds of a split's conversations, for out-of-fold Stage I embeddings (``meritsl oof``)."""

from __future__ import annotations

import random


def conversation_folds(dialogue_ids: list[str], num_folds: int, seed: int = 0) -> dict[str, int]:
    """dialogue id -> fold in ``[0, num_folds)``: a seeded shuffle dealt round-robin, so fold sizes differ by one."""
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2 (K Stage I models, each trained on K-1 folds), got {num_folds}")
    unique = sorted(set(dialogue_ids))
    if len(unique) < num_folds:
        raise ValueError(f"{num_folds} folds need at least {num_folds} training conversations, there are {len(unique)}")
    random.Random(seed).shuffle(unique)
    return {d: i % num_folds for i, d in enumerate(unique)}
