"""Softmax numerics: log-sum-exp, softmax with temperature, log-softmax (notebook 02).

Subtracting the row maximum m changes nothing mathematically,
    logsumexp(x) = m + log sum_k exp(x_k - m),
but keeps every exp argument <= 0, so nothing overflows. A row that is entirely
-inf (every class masked) has no finite maximum; we shift by 0 instead and the
result is the mathematically right -inf (softmax of such a row is undefined: NaN).
"""
import torch

from ._inputs import as_float, check_dim, number


def _finite_row_max(x, dim):
    m = x.amax(dim=dim, keepdim=True).detach()  # a constant shift: no gradient flows through it
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def logsumexp(x, dim=-1):
    """log sum_k exp(x_k) along ``dim``, stable for |x| up to the dtype's max and for -inf.

    x: (..., C, ...). Returns x's shape without ``dim``.
    """
    x = as_float("x", x, "logsumexp")
    check_dim("x", x, dim, "logsumexp")
    m = _finite_row_max(x, dim)
    return (m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).squeeze(dim)


def log_softmax(logits, dim=-1, temperature=1.0):
    """log softmax(x / T)_k = x_k / T - logsumexp(x / T). logits: (..., C). Returns the same shape."""
    x = as_float("logits", logits, "log_softmax") / number("log_softmax", "temperature", temperature, above=0)
    return x - logsumexp(x, dim).unsqueeze(dim)


def softmax(logits, dim=-1, temperature=1.0):
    """softmax(x / T)_k = exp(x_k / T - m) / sum_j exp(x_j / T - m), m the row max.

    T -> 0 approaches one-hot on the argmax, T -> inf the uniform distribution.
    logits: (..., C). Returns the same shape; each slice along ``dim`` sums to 1.
    """
    x = as_float("logits", logits, "softmax") / number("softmax", "temperature", temperature, above=0)
    check_dim("logits", x, dim, "softmax")
    e = torch.exp(x - _finite_row_max(x, dim))
    return e / e.sum(dim=dim, keepdim=True)


def naive_softmax(logits, dim=-1):
    """exp(x) / sum exp(x) with no shift: overflows to inf / inf = NaN once x > ~88 in fp32."""
    e = torch.exp(logits)
    return e / e.sum(dim=dim, keepdim=True)


def naive_logsumexp(x, dim=-1):
    """log(sum exp(x)) with no shift: inf for large x, -inf (log 0) for very negative x."""
    return torch.log(torch.exp(x).sum(dim=dim))


def naive_log_softmax(logits, dim=-1):
    """log(naive_softmax(x)): -inf wherever the probability underflows to 0."""
    return torch.log(naive_softmax(logits, dim))


