"""Contrastive losses: NT-Xent / InfoNCE over similarities, and the Bradley–Terry pairwise loss (notebooks 07, 08).

NT-Xent (SimCLR). Two views z1, z2 (N, D) of N items are stacked into z (2N, D) and normalised to unit
length; S = z z^T / tau holds the cosine similarities over the temperature. Row i is a (2N - 1)-way
classification: its own entry S_ii is removed (set to -inf), and the right class is its partner
i + N (i < N) or i - N (i >= N). The loss is the mean cross-entropy over the 2N rows,
    loss_i = -S_i,pos(i) + logsumexp_{k != i} S_ik.

Bradley–Terry. With rewards r_c (chosen) and r_r (rejected), P(chosen > rejected) = sigma(r_c - r_r), and
    loss = -log sigma(d) = softplus(-d) = max(-d, 0) + log(1 + exp(-|d|)),   d = r_c - r_r,
the two-candidate case of a softmax cross-entropy (logits (r_c, r_r), target 0). The last form never
overflows: d = 1e3 gives exactly 0, d = -1e3 exactly 1e3. Its max is written (|d| - d) / 2 (``log_sigmoid``), so that
its autograd gradient is sigma(d) - 1 at d = 0 too, where every pair starts when the rewards (or DPO's policy and
reference) are equal.
"""
import torch

from ._inputs import as_float, number, reduce, same_shape
from .softmax import logsumexp


def _unit_rows(z):
    # as F.normalize: a zero row stays 0, so its cosine with every row is 0 (not 0 / 0 = nan)
    return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min(1e-12)


def nt_xent(z1, z2, temperature=0.5):
    """Normalised-temperature cross-entropy (SimCLR) over the 2N x 2N cosine-similarity matrix.

    z1, z2: (N, D) embeddings of two views of the same N items (row i of z1 pairs with row i of z2).
    Returns a scalar: the mean over all 2N anchors.
    """
    fn = "nt_xent"
    a, b = as_float("z1", z1, fn), as_float("z2", z2, fn)
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{fn}: expected z1 and z2 of the same shape (N, D), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    n = a.shape[0]
    z = _unit_rows(torch.cat([a, b]))
    sim = (z @ z.T / number(fn, "temperature", temperature, above=0)).fill_diagonal_(-torch.inf)
    partner = torch.arange(2 * n).roll(n)  # i -> i + N for i < N, i -> i - N for i >= N
    return (logsumexp(sim) - sim[torch.arange(2 * n), partner]).mean()


def info_nce(query, positive_key, negative_keys, temperature=0.1):
    """-log softmax over (positive, negatives) of cosine similarity / tau, for each query; the mean over queries.

    query, positive_key: (N, D); negative_keys: (M, D) shared by all queries. Returns a scalar.
    """
    fn = "info_nce"
    q, p = as_float("query", query, fn), as_float("positive_key", positive_key, fn)
    neg = as_float("negative_keys", negative_keys, fn)
    if q.dim() != 2 or q.shape != p.shape or neg.dim() != 2 or neg.shape[1] != q.shape[1]:
        raise ValueError(f"{fn}: expected query (N, D), positive_key (N, D), negative_keys (M, D), got "
                         f"{tuple(q.shape)}, {tuple(p.shape)}, {tuple(neg.shape)}")
    q, p, neg = _unit_rows(q), _unit_rows(p), _unit_rows(neg)
    tau = number(fn, "temperature", temperature, above=0)
    logits = torch.cat([(q * p).sum(-1, keepdim=True), q @ neg.T], dim=1) / tau
    return (logsumexp(logits) - logits[:, 0]).mean()


def log_sigmoid(x):
    """log sigma(x) = -(max(-x, 0) + log1p(exp(-|x|))), finite for every finite x; gradient sigma(-x). x's shape.

    max(-x, 0) is written (|x| - x) / 2. With clamp(-x, min=0), autograd differentiates the max and |x| apart at their
    shared kink x = 0 (slopes -1 and sign(0) = 0) and returns 1 there, not sigma(0) = 1/2; with both kinks in |x|,
    they get the same rule (slope 0, the midpoint of +-1) and cancel as they do in the sum.
    """
    x = as_float("x", x, "log_sigmoid")
    return -((x.abs() - x) / 2 + torch.log1p(torch.exp(-x.abs())))


def bradley_terry_loss(r_chosen, r_rejected, reduction="mean"):
    """-log sigma(r_chosen - r_rejected), reduced by "mean", "sum" or "none".

    r_chosen, r_rejected: (...) rewards of the preferred and the other response, same shape (0-d and empty included).
    Returns a scalar, or (...) for reduction="none"; an empty batch gives nan for "mean" (a mean over nothing), 0 for
    "sum", as torch.mean and torch.sum do.
    """
    fn = "bradley_terry_loss"
    rc, rr = as_float("r_chosen", r_chosen, fn), as_float("r_rejected", r_rejected, fn)
    same_shape(fn, r_chosen=rc, r_rejected=rr)
    return reduce(-log_sigmoid(rc - rr), reduction, fn)
