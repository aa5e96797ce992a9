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
"""
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
