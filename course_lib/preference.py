"""Reward models from preferences, and the KL-regularised RLHF objective with its closed-form optimum (notebook 08).

Bradley–Terry. A reward r(x, y) scores a response y to a prompt x; a rater prefers y_w to y_l with probability
    P(y_w > y_l | x) = sigma(r(x, y_w) - r(x, y_l)),
so only differences of rewards are identified (adding c(x) to every reward of prompt x changes nothing). The
negative log-likelihood of observed preferences is ``contrastive.bradley_terry_loss``.

RLHF. For each prompt (a row), a policy pi over N responses is scored by
    J(pi) = E_pi[r] - beta KL(pi || pi_ref) = beta log Z - beta KL(pi || pi*),
    pi*(y) = pi_ref(y) exp(r(y) / beta) / Z,   Z = sum_y pi_ref(y) exp(r(y) / beta),
so pi* is the unique maximiser and J(pi*) = beta log Z. Everything is computed in log space: r / beta = 1e4
neither overflows nor loses the normalisation.
"""
import math

import torch

from ._inputs import as_float, number, same_shape
from .information import kl_divergence
from .softmax import logsumexp


def _policy_inputs(ref_probs, rewards, beta, fn):
    p = as_float("ref_probs", ref_probs, fn)
    r = as_float("rewards", rewards, fn)
    if p.dim() == 0:
        raise ValueError(f"{fn}: expected ref_probs of shape (..., N) (one row of N responses per prompt), got a 0-d tensor")
    same_shape(fn, ref_probs=p, rewards=r)
    if bool((p < 0).any()) or not torch.allclose(p.double().sum(-1), torch.ones((), dtype=torch.float64), atol=1e-4):
        raise ValueError(f"{fn}: every row of ref_probs must be a distribution (entries >= 0 summing to 1)")
    dtype = torch.promote_types(p.dtype, r.dtype)
    return p.to(dtype), r.to(dtype), number(fn, "beta", beta, above=0)


def _tilted_logits(p, r, beta):
    """log pi_ref + r / beta, with -inf (not NaN) where pi_ref = 0."""
    return torch.where(p > 0, p.log() + r / beta, torch.full_like(p, -math.inf))


def optimal_policy(ref_probs, rewards, beta):
    """pi*(y) = pi_ref(y) exp(r(y) / beta) / Z, i.e. softmax(log pi_ref + r / beta) along the last axis.

    ref_probs: (..., N) rows of probabilities; rewards: (..., N); beta > 0. Returns (..., N) rows summing to 1,
    exactly 0 where pi_ref is 0.
    """
    p, r, beta = _policy_inputs(ref_probs, rewards, beta, "optimal_policy")
    z = _tilted_logits(p, r, beta)
    return (z - logsumexp(z)[..., None]).exp()


def log_partition(ref_probs, rewards, beta):
    """beta log Z = beta log sum_y pi_ref(y) exp(r(y) / beta): the optimal value J(pi*) of each row, shape (...)."""
    p, r, beta = _policy_inputs(ref_probs, rewards, beta, "log_partition")
    return beta * logsumexp(_tilted_logits(p, r, beta))


def rlhf_objective(policy_probs, ref_probs, rewards, beta):
    """J(pi) = sum_y pi(y) r(y) - beta KL(pi || pi_ref) for each row, shape (...)."""
    p, r, beta = _policy_inputs(ref_probs, rewards, beta, "rlhf_objective")
    pi = as_float("policy_probs", policy_probs, "rlhf_objective").to(p)
    same_shape("rlhf_objective", policy_probs=pi, ref_probs=p)
    expected = torch.where(pi > 0, pi * r, torch.zeros_like(pi)).sum(-1)
    return expected - beta * kl_divergence(pi, p)
