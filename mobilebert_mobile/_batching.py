"""Run any number of rows through a model whose batch dimension is fixed."""
from __future__ import annotations

from typing import Callable

import numpy as np


def run_in_fixed_batches(run: Callable[[dict], dict], feeds: dict[str, np.ndarray], batch: int) -> dict:
    """Call ``run`` on chunks of ``batch`` rows (the last one padded by repeating its last row) and
    concatenate the outputs, dropping the padding rows. ``run`` returns a dict of arrays."""
    n = next(iter(feeds.values())).shape[0]
    outs: dict[str, list] = {}
    for s in range(0, n, batch):
        chunk = {k: v[s:s + batch] for k, v in feeds.items()}
        got = next(iter(chunk.values())).shape[0]
        if got < batch:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], batch - got, 0)]) for k, v in chunk.items()}
        for k, v in run(chunk).items():
            outs.setdefault(k, []).append(np.asarray(v)[:got])
    return {k: np.concatenate(v) for k, v in outs.items()}
