"""Maximum likelihood and the negative log-likelihoods it turns into (notebook 01).

Minimising the NLL of a model's distribution over the data is maximum likelihood:
Bernoulli NLL is binary cross-entropy, categorical NLL is cross-entropy, and the
Gaussian NLL with a fixed variance is MSE up to a scale and a constant.
"""
import math

import torch

from ._inputs import as_float, as_index, broadcasts_to, reduce, same_shape

LOG_FLOOR = -100.0  # torch's BCE clamps log p at -100 so that p = 0 gives a large finite loss


def binary_cross_entropy(probs, targets, reduction="mean"):
    """Bernoulli NLL from probabilities: -[y log p + (1 - y) log(1 - p)].

    probs: (...) in [0, 1]; targets: (...) same shape, in [0, 1]. Returns (...) or a scalar.
    """
    fn = "binary_cross_entropy"
    p, y = as_float("probs", probs, fn), as_float("targets", targets, fn)
    same_shape(fn, probs=p, targets=y)
    log_p = torch.log(p).clamp(min=LOG_FLOOR)
    log_not_p = torch.log1p(-p).clamp(min=LOG_FLOOR)
    return reduce(-(y * log_p + (1 - y) * log_not_p), reduction, fn)


def binary_cross_entropy_with_logits(logits, targets, reduction="mean"):
    """Bernoulli NLL from a logit z, p = sigmoid(z), written so exp never overflows:

    -[y log s(z) + (1 - y) log(1 - s(z))] = max(z, 0) - y z + log(1 + e^{-|z|}).
    max(z, 0) is written (z + |z|) / 2 so that autograd's gradient at z = 0 is s(0) - y = 1/2 - y.
    logits: (...); targets: (...) same shape. Returns (...) or a scalar.
    """
    fn = "binary_cross_entropy_with_logits"
    z, y = as_float("logits", logits, fn), as_float("targets", targets, fn)
    same_shape(fn, logits=z, targets=y)
    return reduce((z + z.abs()) / 2 - y * z + torch.log1p(torch.exp(-z.abs())), reduction, fn)


def categorical_nll(probs, targets, reduction="mean"):
    """Categorical NLL from probabilities: -log p[n, y_n].

    probs: (N, C) rows summing to 1; targets: (N,) integer classes. Returns (N,) or a scalar.
    """
    fn = "categorical_nll"
    p, y = as_float("probs", probs, fn), as_index("targets", targets, fn)
    if p.dim() != 2 or tuple(y.shape) != (p.shape[0],):
        raise ValueError(f"{fn}: expected probs (N, C) and targets (N,), "
                         f"got {tuple(p.shape)} and {tuple(y.shape)}")
    picked = p.gather(1, y[:, None]).squeeze(1)
    return reduce(-torch.log(picked), reduction, fn)


def gaussian_nll(mean, target, var, full=False, eps=1e-6, reduction="mean"):
    """Gaussian NLL: 1/2 [log var + (target - mean)^2 / var] (+ 1/2 log 2 pi if ``full``).

    With var fixed this is MSE / (2 var) plus a constant, so both have the same minimiser.
    mean, target: (...); var: (...) or broadcastable, clamped below at ``eps`` as torch does.
    """
    fn = "gaussian_nll"
    mu, x = as_float("mean", mean, fn), as_float("target", target, fn)
    same_shape(fn, mean=mu, target=x)
    var = torch.as_tensor(var, dtype=mu.dtype).clamp(min=eps)
    broadcasts_to(fn, var=var, mean=mu)
    loss = 0.5 * (torch.log(var) + (x - mu) ** 2 / var)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return reduce(loss.expand_as(mu), reduction, fn)


def mse(pred, target, reduction="mean"):
    """Mean squared error: (pred - target)^2. pred, target: (...) same shape."""
    fn = "mse"
    p, t = as_float("pred", pred, fn), as_float("target", target, fn)
    same_shape(fn, pred=p, target=t)
    return reduce((p - t) ** 2, reduction, fn)
