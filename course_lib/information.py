"""Entropy, cross-entropy, KL divergence, perplexity and bits per character (notebook 03).

For discrete distributions p, q over C outcomes, stored along ``dim`` of tensors shaped (..., C, ...):
    H(p)     = -sum_k p_k log p_k                      (entropy)
    H(p, q)  = -sum_k p_k log q_k                      (cross-entropy)
    KL(p||q) =  sum_k p_k (log p_k - log q_k) = H(p, q) - H(p)
with the limits 0 log 0 = 0 and 0 log(0 / q) = 0, so a term with p_k = 0 never contributes (and never
gives NaN), while p_k > 0 with q_k = 0 makes H(p, q) and KL(p||q) infinite. Results are in nats, or
in log-base ``base`` units (base=2: bits). Logs are only taken of entries that are > 0, so autograd
gives finite gradients too.

For a language model's per-token losses (NLLs in nats):
    perplexity = exp(mean NLL over kept tokens),   bits per character = sum NLL / (ln 2 * characters).
"""
import math

import torch

from ._inputs import as_float, check_dim, number

# How far from 1 a distribution's total may be, by the dtype it arrived in (rounding of each entry).
SUM_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _distribution(name, p, dim, fn):
    """Check that ``p`` holds distributions along ``dim``; return it as a floating tensor (fp32 or better)."""
    x = as_float(name, p, fn)
    check_dim(name, x, dim, fn)
    if not bool((x >= 0).all()):  # also catches NaN
        raise ValueError(f"{fn}: {name} must hold probabilities, non-negative and not NaN, "
                         f"got entries such as {x[~(x >= 0)][0].item():.4g}")
    error = (x.sum(dim) - 1).abs().max().item() if x.numel() else 0.0
    if not error <= SUM_TOLERANCE[p.dtype]:
        raise ValueError(f"{fn}: {name} must sum to 1 along dim={dim} (within {SUM_TOLERANCE[p.dtype]:g} for "
                         f"{p.dtype}), but a total is off by {error:.4g}")
    return x


def _pair(p, q, dim, fn):
    try:
        torch.broadcast_shapes(p.shape, q.shape)
    except (RuntimeError, AttributeError):
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (p, q)]
        raise ValueError(f"{fn}: p {shapes[0]} and q {shapes[1]} must have the same shape or broadcast "
                         f"to a common one") from None
    return _distribution("p", p, dim, fn), _distribution("q", q, dim, fn)


def _in_base(nats, base, fn):
    if not (base > 0 and base != 1):
        raise ValueError(f"{fn}: base must be positive and not 1 (e.g. math.e for nats, 2 for bits), got {base!r}")
    return nats / math.log(base) + 0.0  # + 0.0 turns the -0.0 of a one-hot p into 0.0


def entropy(p, dim=-1, base=math.e):
    """H(p) = -sum_k p_k log p_k along ``dim``, with 0 log 0 = 0.

    p: (..., C) non-negative, summing to 1 along ``dim``. Returns p's shape without ``dim``,
    in nats (base e) or bits (base 2).
    """
    fn = "entropy"
    p = _distribution("p", p, dim, fn)
    positive = p > 0
    return _in_base(-(p * torch.log(torch.where(positive, p, 1))).sum(dim), base, fn)


def cross_entropy_of_distributions(p, q, dim=-1, base=math.e):
    """H(p, q) = -sum_k p_k log q_k along ``dim``: a term with p_k = 0 is 0 (even if q_k = 0).

    p, q: (..., C) distributions along ``dim``, same shape or broadcastable. Returns the broadcast
    shape without ``dim``; +inf where some p_k > 0 has q_k = 0.
    """
    fn = "cross_entropy_of_distributions"
    p, q = _pair(p, q, dim, fn)
    return _in_base(-(p * torch.log(torch.where(p > 0, q, 1))).sum(dim), base, fn)


def kl_divergence(p, q, dim=-1, base=math.e):
    """KL(p || q) = sum_k p_k (log p_k - log q_k) along ``dim``, with 0 log(0 / q) = 0.

    Computed as a difference of logs (never log(p / q), which overflows for tiny q) and never as
    H(p, q) - H(p), which cancels digits when p is close to q. p, q: (..., C) distributions,
    same shape or broadcastable. Returns the broadcast shape without ``dim``; +inf where some
    p_k > 0 has q_k = 0; never NaN.
    """
    fn = "kl_divergence"
    p, q = _pair(p, q, dim, fn)
    positive = p > 0
    log_ratio = torch.log(torch.where(positive, p, 1)) - torch.log(torch.where(positive, q, 1))
    return _in_base((p * log_ratio).sum(dim), base, fn)


def _kept_tokens(token_nll, mask, fn):
    nll = as_float("token_nll", token_nll, fn)
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != nll.shape:
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"{fn}: mask must be a bool tensor shaped like token_nll {tuple(nll.shape)} "
                             f"(True = a real token), got {got}")
        nll = nll[mask]  # padded positions may hold anything (even inf or nan): drop them, never multiply
    if bool((nll < 0).any()):
        raise ValueError(f"{fn}: token NLLs are -log q with q <= 1, so they must be >= 0; "
                         f"got a minimum of {nll.min().item():.4g}")
    return nll


def perplexity(token_nll, mask=None):
    """exp(mean NLL) over the tokens where ``mask`` is True (every token if mask is None).

    token_nll: (...) per-token negative log-likelihoods in nats; mask: bool, same shape.
    Returns a 0-d tensor: the geometric mean of 1 / q(token), NaN if no token is kept.
    """
    return _kept_tokens(token_nll, mask, "perplexity").mean().exp()


def bits_per_character(token_nll, num_characters, mask=None):
    """sum of kept token NLLs (nats) / (ln 2 * num_characters): the text's code length per character.

    token_nll: (...) in nats; num_characters: the number of characters of the scored text (> 0);
    mask: bool, same shape as token_nll. Returns a 0-d tensor. Unlike perplexity per token, it
    does not depend on how the text was cut into tokens.
    """
    fn = "bits_per_character"
    nll = _kept_tokens(token_nll, mask, fn)
    num_characters = number(fn, "num_characters", num_characters, above=0, meaning=" (characters of the scored text)")
    return nll.sum() / (math.log(2) * num_characters)
