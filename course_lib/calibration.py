"""Calibration of a classifier's probabilities: reliability bins and expected calibration error (notebook 04).

For predictions probs (N, C) and targets y (N,), each example has a confidence c_n = max_k p[n, k]
and is correct when argmax_k p[n, k] = y_n. The confidences are put in n_bins equal-width bins
B_b = ((b - 1) / n_bins, b / n_bins], b = 1..n_bins, closed on the right (a confidence exactly on an
edge goes to the lower bin; 1.0 goes to the last bin). Then

    ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|,

acc and conf the mean correctness and mean confidence in the bin; empty bins contribute 0.
"""
import torch

from ._inputs import as_float, as_index


def _confidences(probs, targets, n_bins, fn):
    p, y = as_float("probs", probs, fn), as_index("targets", targets, fn)
    if p.dim() != 2 or tuple(y.shape) != (p.shape[0],) or p.shape[0] == 0:
        raise ValueError(f"{fn}: expected probs (N, C) with N >= 1 and targets (N,), "
                         f"got {tuple(p.shape)} and {tuple(y.shape)}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"{fn}: n_bins must be an int >= 1, got {n_bins!r}")
    confidence, predicted = p.max(dim=1)
    correct = (predicted == y).to(p.dtype)
    # right-closed bins: c in ((b-1)/n, b/n] -> index b - 1 = ceil(c n) - 1; c = 0 joins the first bin
    index = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    return confidence, correct, index


def _bins(probs, targets, n_bins, fn):
    confidence, correct, index = _confidences(probs, targets, n_bins, fn)
    count = torch.zeros(n_bins, dtype=confidence.dtype).index_add_(0, index, torch.ones_like(confidence))
    hits = torch.zeros_like(count).index_add_(0, index, correct)
    conf_sum = torch.zeros_like(count).index_add_(0, index, confidence)
    return count, hits / count, conf_sum / count


def reliability_bins(probs, targets, n_bins=15):
    """Per-bin (count, accuracy, mean confidence), each of shape (n_bins,); NaN accuracy/confidence in empty bins."""
    return _bins(probs, targets, n_bins, "reliability_bins")


def expected_calibration_error(probs, targets, n_bins=15):
    """ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)| over right-closed equal-width confidence bins.

    probs: (N, C) probabilities; targets: (N,) integer classes. Returns a 0-d tensor in [0, 1].
    """
    count, accuracy, confidence = _bins(probs, targets, n_bins, "expected_calibration_error")
    gap = torch.where(count > 0, (accuracy - confidence).abs(), torch.zeros_like(count))
    return (count / count.sum() * gap).sum()
