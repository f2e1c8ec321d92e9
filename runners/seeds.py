"""The one seed derivation: every random stream of a job is a pure function of the user's seed and a position.

Sampling seeds sample i's noise from (seed, i, stream); training seeds step s on rank r from (seed, stream, s, r).
Because a stream depends on its position only, never on what ran before, images do not depend on the batch size
or the number of processes, and an interrupted job resumes exactly.
"""
from __future__ import annotations

import numpy as np


def derive_seed(*words: int) -> int:
    """A well-mixed 63-bit seed for a tuple of non-negative integers (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))
