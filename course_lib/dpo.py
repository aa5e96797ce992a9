"""Direct preference optimisation: response log-probabilities, the DPO loss and its variants (notebook 09).

A pair is a prompt x with a chosen response y_w and a rejected one y_l. With summed log-probabilities of the
responses under the trained policy (pi_c, pi_r) and under a frozen reference (ref_c, ref_r),

    h = (pi_c - pi_r) - (ref_c - ref_r)                                        (difference of log-ratios)
    DPO (conservative, label smoothing eps):  loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)
    IPO:                                      loss = (h - 1 / (2 beta))^2
    implicit rewards:  beta (pi_c - ref_c) and beta (pi_r - ref_r), detached (metrics, not part of the graph)

This is the convention of Hugging Face TRL's DPOTrainer ("sigmoid" and "ipo" losses): the functions return one
loss per pair and the trainer takes the mean over the batch. Reference-free DPO takes every reference log-prob as
0 (here also in the implicit rewards; TRL still subtracts the reference log-probs in the rewards it logs).
TRL's IPO averages the log-probs over response tokens before this formula; pass averaged log-probs to match.

Three relatives take other data or drop the reference. With n_c, n_r the responses' token counts and a = pi / n the
average log-probability per token:

    SimPO (no reference):   loss = -(1 - eps) log sigma(t) - eps log sigma(-t),  t = beta (a_c - a_r) - gamma
    KTO (unpaired, r = pi - ref, z0 = max(0, KL estimate), detached):
                            desirable:   lambda_D (1 - sigma(beta (r - z0)))
                            undesirable: lambda_U (1 - sigma(beta (z0 - r)))
    ORPO (no reference):    loss = -a_c + lam * -log sigma(log odds_c - log odds_r),  log odds = a - log(1 - e^a)

as TRL's CPOTrainer (loss_type="simpo", cpo_alpha=0), KTOTrainer (loss_type="kto") and ORPOTrainer compute them, one
loss per pair (per example for KTO); the differences are said in each docstring.
"""
import math

import torch

from ._inputs import as_float, number, same_shape
from .contrastive import log_sigmoid
from .language_model import sequence_log_likelihood


def sequence_logprobs(logits, tokens, response_mask):
    """log pi(response | prompt) = sum_t m[t+1] log softmax(logits[t])[tokens[t+1]] for each sequence.

    logits: (B, T, V) from a causal LM run on tokens (B, T) = prompt + response + padding; response_mask: (B, T)
    bool, True exactly on response tokens (prompt and padding False). Returns (B,) summed log-probabilities.
    """
    if not isinstance(response_mask, torch.Tensor) or response_mask.dtype != torch.bool:
        raise ValueError(f"sequence_logprobs: response_mask must be a bool tensor shaped like tokens (B, T), got "
                         f"{getattr(response_mask, 'dtype', type(response_mask).__name__)}")
    return sequence_log_likelihood(logits, tokens, response_mask)


def _log_ratio_difference(pc, pr, rc, rr, fn, reference_free=False):
    pc, pr = as_float("policy_chosen_logps", pc, fn), as_float("policy_rejected_logps", pr, fn)
    rc, rr = as_float("ref_chosen_logps", rc, fn), as_float("ref_rejected_logps", rr, fn)
    same_shape(fn, policy_chosen_logps=pc, policy_rejected_logps=pr, ref_chosen_logps=rc, ref_rejected_logps=rr)
    if reference_free:
        rc, rr = torch.zeros_like(rc), torch.zeros_like(rr)
    return pc, pr, rc, rr, (pc - pr) - (rc - rr)


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
             label_smoothing=0.0, reference_free=False):
    """Per-pair DPO loss and implicit rewards.

    All four log-prob tensors: (B,) (or any common shape). beta > 0; label_smoothing eps in [0, 0.5] (the
    probability that a label is flipped: conservative DPO); reference_free: use 0 for every reference log-prob.
    Returns (losses, chosen_rewards, rejected_rewards), each of the inputs' shape; the rewards are detached.
    """
    fn = "dpo_loss"
    pc, pr, rc, rr, h = _log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                              ref_rejected_logps, fn, reference_free)
    beta = number(fn, "beta", beta, above=0)
    eps = number(fn, "label_smoothing", label_smoothing, 0.0, 0.5)
    losses = -(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h)
    return losses, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


def ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """Per-pair IPO loss (h - 1/(2 beta))^2, h the difference of log-ratios. Same shapes as ``dpo_loss``."""
    fn = "ipo_loss"
    *_, h = _log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                  ref_rejected_logps, fn)
    return (h - 1 / (2 * number(fn, "beta", beta, above=0))) ** 2


def batch_logprobs(model, batch):
    """(chosen, rejected) summed response log-probs of ``model`` on a preference batch, one forward pass.

    batch: dict with "chosen", "rejected" (B, T) token ids and "chosen_mask", "rejected_mask" (B, T) bool
    response masks; chosen and rejected share T (pad them to a common length).
    """
    tokens = torch.cat([batch["chosen"], batch["rejected"]])
    logps = sequence_logprobs(model(tokens), tokens, torch.cat([batch["chosen_mask"], batch["rejected_mask"]]))
    return logps.chunk(2)


def dpo_step(policy, reference, batch, optimizer, beta, label_smoothing=0.0):
    """One optimiser step of ``policy`` on the mean DPO loss of ``batch``; ``reference`` is only read.

    Returns the mean loss (a float) before the step.
    """
    policy_chosen, policy_rejected = batch_logprobs(policy, batch)
    with torch.no_grad():
        ref_chosen, ref_rejected = batch_logprobs(reference, batch)
    losses, _, _ = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing)
    loss = losses.mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


# ---------------------------------------------------------------------------------------- SimPO, KTO, ORPO

def _average_logps(fn, logps, lengths, name):
    """Summed log-probs over token counts: the average log-probability per response token, in logps' dtype."""
    if not isinstance(lengths, torch.Tensor) or lengths.dtype == torch.bool or lengths.is_complex():
        raise ValueError(f"{fn}: {name} must be a tensor of response lengths (token counts, integer or floating), "
                         f"got {getattr(lengths, 'dtype', type(lengths).__name__)}")
    if lengths.numel() and not bool((lengths > 0).all()):
        raise ValueError(f"{fn}: every entry of {name} must be > 0 (a response has at least one token), got "
                         f"{lengths.min().item()}")
    return logps / lengths.to(logps.dtype)


def _paired_averages(fn, pc, pr, nc, nr):
    pc, pr = as_float("policy_chosen_logps", pc, fn), as_float("policy_rejected_logps", pr, fn)
    for name, n in (("chosen_lengths", nc), ("rejected_lengths", nr)):
        if not isinstance(n, torch.Tensor):
            raise ValueError(f"{fn}: {name} must be a tensor of response lengths, got {type(n).__name__}")
    same_shape(fn, policy_chosen_logps=pc, policy_rejected_logps=pr, chosen_lengths=nc, rejected_lengths=nr)
    return _average_logps(fn, pc, nc, "chosen_lengths"), _average_logps(fn, pr, nr, "rejected_lengths")


def simpo_loss(policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths, beta, gamma,
               label_smoothing=0.0):
    """Per-pair SimPO loss and its implicit rewards, which need no reference model.

    policy_chosen_logps, policy_rejected_logps: summed response log-probs, (B,) or any common shape;
    chosen_lengths, rejected_lengths: the responses' token counts, same shape, integer or floating, every one > 0.
    With the average log-probabilities a_c = pi_c / n_c and a_r = pi_r / n_r (the implicit reward is beta a):

        t = beta (a_c - a_r) - gamma,     loss = -(1 - eps) log sigma(t) - eps log sigma(-t)

    beta > 0; gamma >= 0, the target margin of the rewards; label_smoothing eps in [0, 0.5].
    Returns (losses, chosen_rewards, rejected_rewards), each of the inputs' shape: the rewards beta a_c and beta a_r,
    detached. This is TRL's CPOTrainer with loss_type="simpo" and cpo_alpha=0 (SimPO has no SFT term): TRL averages
    the log-probs itself, writes t as beta (a_c - a_r - gamma / beta), and returns the same rewards.
    """
    fn = "simpo_loss"
    a_c, a_r = _paired_averages(fn, policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths)
    beta = number(fn, "beta", beta, above=0)
    gamma = number(fn, "gamma", gamma, low=0.0, meaning=" (the target reward margin)")
    eps = number(fn, "label_smoothing", label_smoothing, 0.0, 0.5)
    t = beta * (a_c - a_r) - gamma
    losses = -(1 - eps) * log_sigmoid(t) - eps * log_sigmoid(-t)
    return losses, (beta * a_c).detach(), (beta * a_r).detach()


def kto_reference_point(policy_kl_logps, ref_kl_logps):
    """KTO's reference point z0 = max(0, mean(policy_kl_logps - ref_kl_logps)), detached: a 0-d tensor.

    policy_kl_logps, ref_kl_logps: (M,) summed log-probs, M >= 1, under the policy and the reference, of mismatched
    (prompt, response) pairs: each prompt of the batch with the response of another example. Their mean log-ratio
    estimates KL(policy || reference) on responses the prompt did not ask for; TRL's KTOTrainer clamps it at 0
    and detaches it (its `kl`), so no gradient flows through the reference point.
    """
    fn = "kto_reference_point"
    pk, rk = as_float("policy_kl_logps", policy_kl_logps, fn), as_float("ref_kl_logps", ref_kl_logps, fn)
    same_shape(fn, policy_kl_logps=pk, ref_kl_logps=rk)
    if pk.numel() == 0:
        raise ValueError(f"{fn}: the KL estimate needs at least one mismatched pair, got shape {tuple(pk.shape)}")
    return (pk - rk).mean().detach().clamp(min=0)


def kto_loss(policy_logps, ref_logps, desirable, beta, z0=None, policy_kl_logps=None, ref_kl_logps=None,
             desirable_weight=1.0, undesirable_weight=1.0):
    """Per-example KTO loss on unpaired responses, each labelled desirable or undesirable.

    policy_logps, ref_logps: summed response log-probs under the policy and the frozen reference, (B,) or any common
    shape (B = 0 included); desirable: bool, same shape. With r = policy_logps - ref_logps and the reference point z0:

        desirable:    desirable_weight   * (1 - sigma(beta (r - z0)))
        undesirable:  undesirable_weight * (1 - sigma(beta (z0 - r)))

    z0 is a constant of the batch (no gradient flows into it): a number, or a 0-d tensor (detached here); or None,
    and then it is estimated from policy_kl_logps and ref_kl_logps (``kto_reference_point``). Give one or the other.
    beta > 0; the weights >= 0 (the KTO paper keeps desirable_weight n_D / (undesirable_weight n_U) in [1, 4/3]).
    Returns the losses, of policy_logps' shape (no reduction: the trainer takes the mean). TRL's KTOTrainer
    (loss_type="kto") computes the same numbers but returns the desirable losses and then the undesirable ones,
    concatenated; here each stays in its place.
    """
    fn = "kto_loss"
    pl, rl = as_float("policy_logps", policy_logps, fn), as_float("ref_logps", ref_logps, fn)
    if not isinstance(desirable, torch.Tensor) or desirable.dtype != torch.bool:
        raise ValueError(f"{fn}: desirable must be a bool tensor shaped like policy_logps, got "
                         f"{getattr(desirable, 'dtype', type(desirable).__name__)}")
    same_shape(fn, policy_logps=pl, ref_logps=rl, desirable=desirable)
    beta = number(fn, "beta", beta, above=0)
    w_d = number(fn, "desirable_weight", desirable_weight, low=0.0)
    w_u = number(fn, "undesirable_weight", undesirable_weight, low=0.0)
    if z0 is not None and (policy_kl_logps is not None or ref_kl_logps is not None):
        raise ValueError(f"{fn}: give z0 or the KL log-probs it is estimated from (policy_kl_logps, ref_kl_logps), "
                         f"not both")
    if z0 is None:
        if policy_kl_logps is None or ref_kl_logps is None:
            raise ValueError(f"{fn}: give z0, or both policy_kl_logps and ref_kl_logps to estimate it from")
        z = kto_reference_point(policy_kl_logps, ref_kl_logps).to(pl.dtype)
    elif isinstance(z0, torch.Tensor) and z0.numel() == 1 and z0.is_floating_point():
        z = z0.detach().reshape(()).to(pl.dtype)
    else:
        z = torch.tensor(number(fn, "z0", z0), dtype=pl.dtype)
    r = pl - rl
    return torch.where(desirable, w_d * (1 - torch.sigmoid(beta * (r - z))), w_u * (1 - torch.sigmoid(beta * (z - r))))


_LOG_HALF = -math.log(2)


def log1m_exp(a):
    """log(1 - e^a) for a <= 0, accurate everywhere (Maechler's log1mexp): where a > -log 2, e^a is near 1 and
    1 - e^a cancels, so log(-expm1(a)); below, e^a is small and log1p(-e^a) is exact. Each branch is fed an input
    from its own side, so the branch not taken stays finite and passes a zero gradient (not 0 * inf = nan).
    log1m_exp(0) = -inf (a certain event has no complement)."""
    near = a > _LOG_HALF
    return torch.where(near, torch.log(-torch.expm1(torch.where(near, a, -1.0))),
                       torch.log1p(-torch.exp(torch.where(near, -1.0, a))))


def orpo_loss(policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths, lam):
    """Per-pair ORPO loss: the SFT loss of the chosen response plus lam times the odds-ratio loss. No reference.

    Inputs as ``simpo_loss``'s (summed log-probs, which are <= 0, and token counts > 0). With the average
    log-probabilities a = pi / n and p = e^a, the odds p / (1 - p) of a response have the logarithm
    a - log(1 - e^a) (computed with ``log1m_exp``: finite for every a < 0, +inf at a = 0), and

        d = log odds_c - log odds_r,      loss = -a_c + lam * -log sigma(d)

    lam >= 0 (0 is plain SFT on the chosen responses). Returns (losses, log_odds_ratio), each of the inputs' shape:
    d is detached (a metric; TRL logs its mean). TRL's ORPOTrainer calls lam `beta`, computes log(1 - e^a) as
    log1p(-exp(a)) (which cancels as a -> 0) and its SFT term as the mean NLL over all chosen tokens of the batch;
    here it is per pair, -a_c, so that the batch mean weighs every response alike (the same when the chosen
    responses have one length).
    """
    fn = "orpo_loss"
    a_c, a_r = _paired_averages(fn, policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths)
    lam = number(fn, "lam", lam, low=0.0, meaning=" (the weight of the odds-ratio term)")
    d = (a_c - log1m_exp(a_c)) - (a_r - log1m_exp(a_r))
    return -a_c - lam * log_sigmoid(d), d.detach()
