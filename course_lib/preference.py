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
from .contrastive import bradley_terry_loss
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


def sample_preferences(rewards, num_pairs, generator=None):
    """Pairs of distinct responses, labelled by a Bradley–Terry rater with the given true rewards.

    rewards: (N,) true rewards of a pool of N >= 2 responses. Draws i != j uniformly, then "i preferred" with
    probability sigma(r_i - r_j). Returns (chosen, rejected): two (num_pairs,) int64 index tensors.
    """
    r = as_float("rewards", rewards, "sample_preferences")
    if r.dim() != 1 or len(r) < 2:
        raise ValueError(f"sample_preferences: expected rewards of shape (N,) with N >= 2, got {tuple(r.shape)}")
    n = len(r)
    i = torch.randint(0, n, (num_pairs,), generator=generator)
    j = (i + torch.randint(1, n, (num_pairs,), generator=generator)) % n      # uniform over the others
    first_wins = torch.rand(num_pairs, generator=generator, dtype=torch.float64) < torch.sigmoid((r[i] - r[j]).double())
    return torch.where(first_wins, i, j), torch.where(first_wins, j, i)


def bayes_accuracy(r_first, r_second):
    """Expected accuracy of the best possible ranker on pairs labelled by Bradley–Terry with these true rewards:
    mean of max(sigma(d), 1 - sigma(d)) = sigma(|d|), d = r_first - r_second. Returns a 0-d tensor."""
    a, b = as_float("r_first", r_first, "bayes_accuracy"), as_float("r_second", r_second, "bayes_accuracy")
    same_shape("bayes_accuracy", r_first=a, r_second=b)
    return torch.sigmoid((a - b).abs()).mean()


def fit_linear_reward(features, chosen, rejected, steps=300, lr=0.1, weight_decay=0.0):
    """A linear reward r(y) = features[y] @ w fitted by minimising the Bradley–Terry loss with Adam (full batch).

    features: (N, D) response features; chosen, rejected: (P,) indices of preferred and other responses.
    Returns w: (D,), detached. There is no bias: a constant shift of all rewards is not identified.
    """
    x = as_float("features", features, "fit_linear_reward")
    if x.dim() != 2:
        raise ValueError(f"fit_linear_reward: expected features of shape (N, D), got {tuple(x.shape)}")
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        rewards = x @ w
        loss = bradley_terry_loss(rewards[chosen], rewards[rejected])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return w.detach()
