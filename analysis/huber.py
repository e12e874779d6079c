"""The robust loss of every law fit (Chinchilla's approach 3): Huber on log-loss residuals. One function,
used by analyze.Law and the mixing laws (analysis/mixing.py) alike."""
import numpy as np

HUBER_DELTA = 1e-3


def huber(r, delta=HUBER_DELTA):
    """Per-point Huber loss of residuals r and its derivative d loss / d r (r clipped to +-delta)."""
    a = np.abs(r)
    # np.minimum(np.maximum(.)) is np.clip's result (NaN included) at a third of its call cost: every fit
    # evaluates this 10^2-10^4 times on ~10^2 points
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta)), np.minimum(np.maximum(r, -delta), delta)
