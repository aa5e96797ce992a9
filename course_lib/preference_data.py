"""Synthetic preference data for notebooks 08 and 09: a known reward, pairs a Bradley–Terry rater labels, a fitted reward.

A rater prefers response i to j with probability sigma(r_i - r_j) (Bradley–Terry), so the best any ranker can do
on such pairs is sigma(|r_i - r_j|) on average. None of this is an exercise: the notebook's reward model and
losses are; these make the data they are trained and measured on.
"""
import torch
import torch.nn.functional as F

from ._inputs import as_float, same_shape


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
        loss = -F.logsigmoid(rewards[chosen] - rewards[rejected]).mean()  # Bradley–Terry NLL
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return w.detach()
