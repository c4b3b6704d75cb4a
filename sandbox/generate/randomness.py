"""Independent, reproducible random streams: one per generation step (and per chunk of a step).

Why streams and not one generator passed along: a step's draws then depend only on the seed and the
step's name, so changing how one object is generated leaves every other object byte-identical, and
chunked steps do not depend on chunk order. Names are hashed with CRC-32, not Python's `hash`, which is
randomised per process.
"""

from __future__ import annotations

import zlib

import numpy as np


class RandomStreams:
    """Hands out a NumPy generator per (step, part), all derived from one seed."""

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.seed = seed

    def stream(self, step: str, part: int = 0) -> np.random.Generator:
        """The generator for `step` (and chunk `part` of it); the same arguments give the same draws."""
        return np.random.default_rng([self.seed, zlib.crc32(step.encode()), part])
