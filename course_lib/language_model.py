"""The language-modelling loss: next-token targets, causal masks, padding, sequence likelihoods, sampling.

A causal LM reads tokens x_1..x_T and at position t predicts x_{t+1}: the logits at positions
1..T-1 are scored against the tokens at 2..T (teacher forcing: every position in one pass).
"""
import math

import torch

from . import _inputs


def causal_mask(length: int, device=None) -> torch.Tensor:
    """(length, length) bool, True where query i may attend to key j, i.e. j <= i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def _next_token_log_probs(logits, tokens, mask, fn):
    """log p(x_{t+1} | x_<=t) for t = 1..T-1, shape (B, T-1), and where it counts: mask[:, 1:]."""
    logits = _inputs.as_float("logits", logits, fn)
    tokens = _inputs.as_index("tokens", tokens, fn)
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(f"{fn}: expected logits (B, T, V) and tokens (B, T), got logits {tuple(logits.shape)} "
                         f"and tokens {tuple(tokens.shape)}")
    if mask is None:
        mask = torch.ones_like(tokens, dtype=torch.bool)
    elif mask.shape != tokens.shape or mask.dtype != torch.bool:
        raise ValueError(f"{fn}: mask must be a bool tensor shaped like tokens {tuple(tokens.shape)}, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    log_probs = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return log_probs, mask[:, 1:]


def _counted_only(log_probs, counted):
    """log_probs where counted, 0 elsewhere: selected, not multiplied by the mask (a padding target's log-probability
    may be -inf, and 0 * -inf is nan)."""
    return torch.where(counted, log_probs, 0.0)


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
    """Mean next-token NLL over every counted target: -sum_{b,t} m_{b,t+1} log p(x_{b,t+1} | x_{b,<=t}) / sum m.

    logits (B, T, V) from the model run on tokens (B, T); mask (B, T) bool, False on padding (a target
    position that is False does not count). Every token weighs the same, whatever its sequence's length.
    """
    log_probs, counted = _next_token_log_probs(logits, tokens, mask, "lm_loss")
    return -_counted_only(log_probs, counted).sum() / counted.sum()


def sequence_log_likelihood(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
    """(B,) log p(x_2..x_T | x_1) = sum_t m_{t+1} log p(x_{t+1} | x_<=t), summed over counted targets."""
    log_probs, counted = _next_token_log_probs(logits, tokens, mask, "sequence_log_likelihood")
    return _counted_only(log_probs, counted).sum(-1)


def perplexity_from_batch_losses(mean_losses: torch.Tensor, token_counts: torch.Tensor) -> float:
    """exp(sum_b n_b L_b / sum_b n_b): the perplexity of all tokens from per-batch mean losses L_b over n_b tokens.

    Averaging the batch means (or their perplexities) is wrong as soon as batches differ in size. A batch of no
    tokens counts for nothing, even where its mean is nan (lm_loss of a batch with no counted target).
    """
    mean_losses = _inputs.as_float("mean_losses", mean_losses, "perplexity_from_batch_losses").double()
    _inputs.same_shape("perplexity_from_batch_losses", mean_losses=mean_losses, token_counts=token_counts)
    if (token_counts < 0).any() or token_counts.sum() <= 0:
        raise ValueError("perplexity_from_batch_losses: token_counts must be non-negative with a positive total")
    # selected, not multiplied: an empty batch's n_b L_b would be 0 * nan = nan
    weighted = torch.where(token_counts > 0, mean_losses * token_counts, 0.0)
    return math.exp(weighted.sum().item() / token_counts.sum().item())


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int = None,
                      generator: torch.Generator = None) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids drawn from softmax(logits / T), restricted to the top k if given.

    temperature 0 means greedy (argmax). Ties at the k-th largest logit are all kept.
    """
    logits = _inputs.as_float("logits", logits, "sample_next_token")
    temperature = _inputs.number("sample_next_token", "temperature", temperature, low=0.0, meaning=" (0 = greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"sample_next_token: top_k must be an int >= 1 or None, got {top_k!r}")
    if temperature == 0:
        return logits.argmax(-1)
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
