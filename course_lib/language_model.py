"""The language-modelling loss: next-token targets, causal masks, padding, sequence likelihoods, sampling; and the same
loss at scale: the micro-batch factors of gradient accumulation and data parallelism, the masks of packed rows.

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


# ---------------------------------------------------------------- the loss at scale: accumulation, ranks, packing

def micro_batch_scales(token_counts: torch.Tensor) -> torch.Tensor:
    """s = n / sum(n), float64: the factor of each micro-batch's token-mean loss in one optimizer step.

    token_counts (M,) or (R, M) integers: the counted targets n of each of the M micro-batches of one step (on each of
    R data-parallel ranks, whose gradients the all-reduce sums). With L_m = S_m / n_m a micro-batch's mean loss,
    sum_m s_m grad L_m = grad (sum_m S_m / N), N = sum n: the accumulated (and summed) gradients are the gradient of
    the token mean over the whole step, as if it had been one batch. The mean of micro-batch means, s_m = 1/M, is not
    (it weighs a micro-batch of 2 targets as much as one of 2000); a rank that divides by its own count is not either.
    A micro-batch with n_m = 0 gets s_m = 0 exactly: its mean loss is nan (0 / 0), so its backward is skipped, not
    scaled (0 * nan = nan). Counts must be non-negative with a positive total.
    """
    fn = "micro_batch_scales"
    if not isinstance(token_counts, torch.Tensor) or token_counts.is_floating_point() or \
            token_counts.dtype == torch.bool or token_counts.dim() not in (1, 2):
        got = f"{token_counts.dtype} {tuple(token_counts.shape)}" if isinstance(token_counts, torch.Tensor) else \
            type(token_counts).__name__
        raise ValueError(f"{fn}: token_counts must be a (M,) or (ranks, M) integer tensor, got {got}")
    if (token_counts < 0).any() or token_counts.sum() <= 0:
        raise ValueError(f"{fn}: token_counts must be non-negative with a positive total, got {token_counts.tolist()}")
    counts = token_counts.double()      # exact below 2 ** 53 tokens; each quotient then rounds once
    return counts / counts.sum()


def _document_ids(doc_ids, fn):
    """doc_ids (..., T) integers, nondecreasing along the last axis, checked."""
    if not isinstance(doc_ids, torch.Tensor) or doc_ids.is_floating_point() or doc_ids.dtype == torch.bool or \
            doc_ids.dim() == 0:
        got = f"{doc_ids.dtype} {tuple(doc_ids.shape)}" if isinstance(doc_ids, torch.Tensor) else type(doc_ids).__name__
        raise ValueError(f"{fn}: doc_ids must be a (T,) or (B, T) integer tensor, got {got}")
    if (doc_ids[..., 1:] < doc_ids[..., :-1]).any():
        raise ValueError(f"{fn}: doc_ids must be nondecreasing along each row (documents packed one after another)")
    return doc_ids


def packed_attention_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(..., T, T) bool, True where query i may attend to key j: j <= i and doc_ids[i] == doc_ids[j].

    doc_ids (..., T) integers, nondecreasing along each row: the document of every token of a row into which whole
    documents are packed one after another (any leading batch dims, int32 or int64). Block-diagonal causal: each
    token sees the earlier tokens of its own document only, so every document is computed as if it were alone in
    the row (with position ids that restart at each document). A query always sees itself: no row is all False.
    """
    doc_ids = _document_ids(doc_ids, "packed_attention_mask")
    same_document = doc_ids[..., :, None] == doc_ids[..., None, :]
    return same_document & causal_mask(doc_ids.shape[-1], device=doc_ids.device)


def packed_loss_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(..., T) bool, lm_loss's mask for a packed row: True at t where doc_ids[t] == doc_ids[t - 1].

    The target x_t counts when it continues the document of x_{t-1}, the token it is predicted from; the first token
    of every document (position 0 included) is not a target, as it would not be in its own sequence: it is not
    predicted from the end of the previous document. A row of documents of lengths L_d holds sum_d (L_d - 1) targets.
    doc_ids as for ``packed_attention_mask``; T = 0 gives an empty mask.
    """
    doc_ids = _document_ids(doc_ids, "packed_loss_mask")
    first = torch.zeros_like(doc_ids[..., :1], dtype=torch.bool)
    return torch.cat([first, doc_ids[..., 1:] == doc_ids[..., :-1]], dim=-1)
