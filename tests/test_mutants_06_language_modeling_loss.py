"""Notebook 06's graded tests must reject plausible wrong answers and accept right ones."""
import math

import torch
import torch.nn.functional as F

from mutants import Exercise, mutant_tests, upcast

ASSIGNMENT = "06_language_modeling_loss"


# ------------------------------------------------------------------ shared pieces (elementary torch only)


def _target_log_probs(logits, tokens):
    """(B, T-1) log p(tokens[:, t+1] | logits[:, t])."""
    return upcast(logits)[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)


def _counted(log_p, mask):
    return torch.ones_like(log_p, dtype=torch.bool) if mask is None else mask[:, 1:]


# ------------------------------------------------------------------ lm_loss

def lm_loss_counts_padding(logits, tokens, mask=None):
    return -_target_log_probs(logits, tokens).mean()


def lm_loss_targets_not_shifted(logits, tokens, mask=None):
    log_p = upcast(logits).log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    keep = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask
    return -log_p[keep].mean()


def lm_loss_shifted_the_wrong_way(logits, tokens, mask=None):
    log_p = upcast(logits)[:, 1:].log_softmax(-1).gather(-1, tokens[:, :-1, None]).squeeze(-1)
    keep = torch.ones_like(log_p, dtype=torch.bool) if mask is None else mask[:, :-1]
    return -log_p[keep].mean()


def lm_loss_mean_of_sequence_means(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    keep = _counted(log_p, mask)
    return -((log_p * keep).sum(-1) / keep.sum(-1)).mean()


def lm_loss_mask_off_by_one(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    keep = torch.ones_like(log_p, dtype=torch.bool) if mask is None else mask[:, :-1]
    return -log_p[keep].mean()


def lm_loss_sum_not_mean(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    return -log_p[_counted(log_p, mask)].sum()


def lm_loss_divides_by_all_positions(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    return -log_p[_counted(log_p, mask)].sum() / log_p.numel()


def lm_loss_log_of_softmax(logits, tokens, mask=None):
    e = upcast(logits)[:, :-1].exp()
    log_p = (e / e.sum(-1, keepdim=True)).log().gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return -log_p[_counted(log_p, mask)].mean()


def lm_loss_one_hot_product(logits, tokens, mask=None):
    log_sm = upcast(logits)[:, :-1].log_softmax(-1)
    one_hot = (torch.arange(logits.shape[-1]) == tokens[:, 1:, None]).to(log_sm.dtype)
    log_p = (log_sm * one_hot).sum(-1)       # 0 * (-inf) = nan for tokens with -inf logits
    return -log_p[_counted(log_p, mask)].mean()


def lm_loss_in_bfloat16(logits, tokens, mask=None):
    log_p = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return -log_p[_counted(log_p, mask)].mean()


def lm_loss_detached(logits, tokens, mask=None):
    log_p = _target_log_probs(logits.detach(), tokens)
    return -log_p[_counted(log_p, mask)].mean()


def lm_loss_calls_cross_entropy(logits, tokens, mask=None):
    targets = tokens[:, 1:] if mask is None else tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
    return F.cross_entropy(upcast(logits)[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)


def lm_loss_boolean_indexing_first(logits, tokens, mask=None):
    logits, targets = upcast(logits)[:, :-1], tokens[:, 1:]
    keep = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask[:, 1:]
    rows, picked = logits[keep], targets[keep]                      # (N, V), (N,)
    log_z = rows.max(-1).values + (rows - rows.max(-1, keepdim=True).values).exp().sum(-1).log()
    return (log_z - rows[torch.arange(len(picked)), picked]).mean()


def lm_loss_sequence_sums_over_total(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    keep = _counted(log_p, mask)
    return -torch.where(keep, log_p, torch.zeros_like(log_p)).sum(-1).sum() / keep.sum()


def lm_loss_multiplies_by_the_mask(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    keep = _counted(log_p, mask).to(log_p.dtype)
    return -(log_p * keep).sum() / keep.sum()        # a padding target of log-probability -inf: 0 * -inf = nan


def lm_loss_upcasts_only_bfloat16(logits, tokens, mask=None):
    logits = logits.float() if logits.dtype == torch.bfloat16 else logits
    log_p = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return -log_p[_counted(log_p, mask)].mean()


def lm_loss_in_float64(logits, tokens, mask=None):
    log_p = _target_log_probs(logits.double(), tokens)
    return -log_p[_counted(log_p, mask)].mean()      # right values, but a float64 loss for float32 logits


def lm_loss_count_clamped_to_one(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    keep = _counted(log_p, mask)
    return -log_p[keep].sum() / keep.sum().clamp_min(1)   # 0, not nan, when no target counts


# ------------------------------------------------------------------ sequence_log_likelihood

def sll_averaged(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    keep = _counted(log_p, mask)
    return (log_p * keep).sum(-1) / keep.sum(-1).clamp_min(1)


def sll_negated(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    return -torch.where(_counted(log_p, mask), log_p, torch.zeros_like(log_p)).sum(-1)


def sll_counts_padding(logits, tokens, mask=None):
    return _target_log_probs(logits, tokens).sum(-1)


def sll_not_shifted(logits, tokens, mask=None):
    log_p = upcast(logits).log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    keep = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask
    return torch.where(keep, log_p, torch.zeros_like(log_p)).sum(-1)


def sll_mask_off_by_one(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    keep = torch.ones_like(log_p, dtype=torch.bool) if mask is None else mask[:, :-1]
    return torch.where(keep, log_p, torch.zeros_like(log_p)).sum(-1)


def sll_summed_over_the_batch(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    return torch.where(_counted(log_p, mask), log_p, torch.zeros_like(log_p)).sum()


def sll_log_of_softmax(logits, tokens, mask=None):
    e = upcast(logits)[:, :-1].exp()
    log_p = (e / e.sum(-1, keepdim=True)).log().gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return torch.where(_counted(log_p, mask), log_p, torch.zeros_like(log_p)).sum(-1)


def sll_calls_cross_entropy(logits, tokens, mask=None):
    targets = tokens[:, 1:] if mask is None else tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
    nll = F.cross_entropy(upcast(logits)[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return -nll.sum(-1)


def sll_loop_over_positions(logits, tokens, mask=None):
    logits = upcast(logits)
    total = torch.zeros(tokens.shape[0], dtype=logits.dtype)
    for t in range(tokens.shape[1] - 1):
        z = logits[:, t]
        log_p = z - z.max(-1, keepdim=True).values
        log_p = log_p - log_p.exp().sum(-1, keepdim=True).log()
        term = log_p[torch.arange(tokens.shape[0]), tokens[:, t + 1]]
        if mask is not None:
            term = torch.where(mask[:, t + 1], term, torch.zeros_like(term))
        total = total + term
    return total


def sll_masked_fill(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    return log_p.masked_fill(~_counted(log_p, mask), 0.0).sum(-1)


def sll_multiplies_by_the_mask(logits, tokens, mask=None):
    log_p = _target_log_probs(logits, tokens)
    return (log_p * _counted(log_p, mask)).sum(-1)   # a padding target of log-probability -inf: 0 * -inf = nan


def sll_upcasts_only_bfloat16(logits, tokens, mask=None):
    logits = logits.float() if logits.dtype == torch.bfloat16 else logits
    log_p = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return torch.where(_counted(log_p, mask), log_p, torch.zeros_like(log_p)).sum(-1)


def sll_in_float64(logits, tokens, mask=None):
    log_p = _target_log_probs(logits.double(), tokens)
    return torch.where(_counted(log_p, mask), log_p, torch.zeros_like(log_p)).sum(-1)


# ------------------------------------------------------------------ perplexity_from_batch_losses

def ppl_mean_of_batch_perplexities(mean_losses, token_counts):
    return mean_losses.double().exp().mean().item()


def ppl_unweighted_mean_of_losses(mean_losses, token_counts):
    return math.exp(mean_losses.double().mean().item())


def ppl_weighted_sum_over_number_of_batches(mean_losses, token_counts):
    return math.exp((mean_losses.double() * token_counts).sum().item() / len(mean_losses))


def ppl_weighted_mean_of_perplexities(mean_losses, token_counts):
    counts = token_counts.double()
    return ((mean_losses.double().exp() * counts).sum() / counts.sum()).item()


def ppl_base_two(mean_losses, token_counts):
    counts = token_counts.double()
    return 2 ** ((mean_losses.double() * counts).sum() / counts.sum()).item()


def ppl_forgot_the_exp(mean_losses, token_counts):
    counts = token_counts.double()
    return ((mean_losses.double() * counts).sum() / counts.sum()).item()


def ppl_in_input_precision(mean_losses, token_counts):
    weighted = (mean_losses * token_counts.to(mean_losses.dtype)).sum() / token_counts.to(mean_losses.dtype).sum()
    return weighted.exp()


def ppl_weighted_sum_with_empty_batches(mean_losses, token_counts):
    counts = token_counts.double()
    total = (mean_losses.double() * counts).sum()     # a batch of 0 tokens whose mean is nan: 0 * nan = nan
    return math.exp(total.item() / counts.sum().item())


def ppl_float64_dot(mean_losses, token_counts):
    counted = token_counts > 0                         # a batch of no tokens has no mean (nan): leave it out
    counts = token_counts[counted].to(torch.float64)
    return torch.exp(torch.dot(mean_losses[counted].to(torch.float64), counts) / counts.sum())


def ppl_fsum(mean_losses, token_counts):
    total = math.fsum(float(l) * int(n) for l, n in zip(mean_losses.tolist(), token_counts.tolist()) if n > 0)
    return math.exp(total / sum(token_counts.tolist()))


# ------------------------------------------------------------------ causal_mask

def mask_all_true(length, device=None):
    return torch.ones(length, length, dtype=torch.bool, device=device)


def mask_diagonal_excluded(length, device=None):
    i = torch.arange(length, device=device)
    return i[None, :] < i[:, None]


def mask_upper_triangle(length, device=None):
    i = torch.arange(length, device=device)
    return i[None, :] >= i[:, None]


def mask_float_zeros_and_ones(length, device=None):
    i = torch.arange(length, device=device)
    return (i[None, :] <= i[:, None]).float()


def mask_int64(length, device=None):
    i = torch.arange(length, device=device)
    return (i[None, :] <= i[:, None]).long()


def mask_calls_tril(length, device=None):
    return torch.ones(length, length, device=device).tril().bool()


def mask_anti_diagonal(length, device=None):
    i = torch.arange(length, device=device)
    return i[None, :] + i[:, None] >= length - 1


def mask_row_by_row(length, device=None):
    i = torch.arange(length, device=device)
    return torch.stack([i <= row for row in range(length)])   # length 0: torch.stack of no rows raises


def mask_not_future(length, device=None):
    i = torch.arange(length, device=device)
    return ~(i[:, None] < i[None, :])


def mask_cumsum_of_identity(length, device=None):
    return torch.eye(length, device=device).cumsum(0) > 0


# ------------------------------------------------------------------ sample_next_token

def _top_k(logits, top_k):
    logits = upcast(logits)
    if top_k is None:
        return logits
    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def _probs(logits, temperature, top_k):
    return torch.softmax(_top_k(logits, top_k) / temperature, dim=-1)


def _draw(probs, generator):
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sample_temperature_multiplied(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return _draw(_probs(logits * temperature * temperature, temperature, top_k), generator)


def sample_ignores_temperature(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return _draw(_probs(logits, 1.0, top_k), generator)


def sample_always_argmax(logits, temperature=1.0, top_k=None, generator=None):
    return logits.argmax(-1)


def sample_top_k_keeps_k_plus_1(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return _draw(_probs(logits, temperature, None if top_k is None else top_k + 1), generator)


def sample_top_k_drops_ties(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    logits = upcast(logits)
    if top_k is not None:
        index = logits.topk(min(top_k, logits.shape[-1]), dim=-1).indices
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, index, True)
        logits = logits.masked_fill(~keep, -math.inf)
    return _draw(torch.softmax(logits / temperature, -1), generator)


def sample_ignores_top_k(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return _draw(_probs(logits, temperature, None), generator)


def sample_global_rng(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return _draw(_probs(logits, temperature, top_k), None)


def sample_no_greedy_case(logits, temperature=1.0, top_k=None, generator=None):
    return _draw(_probs(logits, temperature, top_k), generator)    # logits / 0: inf and nan


def sample_exp_without_max(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    logits = _top_k(logits, top_k)
    e = (logits / temperature).exp()
    return _draw(e / e.sum(-1, keepdim=True), generator)


def sample_softmax_over_the_batch(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    logits = _top_k(logits, top_k)
    return _draw(torch.softmax(logits / temperature, dim=0), generator)


def sample_fresh_generator_when_none(logits, temperature=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    generator = torch.Generator() if generator is None else generator   # the same seed on every call
    return _draw(_probs(logits, temperature, top_k), generator)


def sample_gumbel_max(logits, temperature=1.0, top_k=None, generator=None):
    logits = upcast(logits)
    if temperature == 0:
        return logits.argmax(-1)
    if top_k is not None:
        kth = logits.sort(-1, descending=True).values[:, min(top_k, logits.shape[-1]) - 1:][:, :1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float64).clamp_min(1e-300)
    return (logits.double() / temperature - (-u.log()).log()).argmax(-1)


def sample_inverse_cdf(logits, temperature=1.0, top_k=None, generator=None):
    logits = upcast(logits).double()
    if temperature == 0:
        return logits.argmax(-1)
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    cdf = torch.softmax(logits / temperature, -1).cumsum(-1)
    u = torch.rand(logits.shape[0], 1, generator=generator, dtype=torch.float64) * cdf[:, -1:]
    return (cdf <= u).sum(-1).clamp_max(logits.shape[-1] - 1)


# ------------------------------------------------------------------ micro_batch_scales

def scales_mean_of_means(token_counts):
    return torch.full(token_counts.shape, 1 / token_counts.numel(), dtype=torch.float64)


def scales_mean_of_nonempty_means(token_counts):
    nonempty = (token_counts > 0).double()             # 1/M over the micro-batches that hold a target: still a mean
    return nonempty / nonempty.sum()                   # of means


def scales_per_rank(token_counts):
    counts = token_counts.double()                     # each rank divides by its own count (right on one process)
    return counts / counts.sum(-1, keepdim=True)


def scales_for_an_averaging_all_reduce(token_counts):
    counts = token_counts.double()                     # DDP's factor R n / N, where the all-reduce sums
    ranks = counts.shape[0] if counts.dim() == 2 else 1
    return ranks * counts / counts.sum()


def scales_one_over_total(token_counts):
    # the factor of a summed loss (1/N), applied to each micro-batch's mean
    return torch.full(token_counts.shape, 1 / token_counts.sum().item(), dtype=torch.float64)


def scales_counts_clamped(token_counts):
    counts = token_counts.double().clamp_min(1)        # "no division by zero": an empty micro-batch weighs 1 target
    return counts / counts.sum()


def scales_in_float32(token_counts):
    counts = token_counts.float()
    return (counts / counts.sum()).double()


def scales_integer_division(token_counts):
    return token_counts // token_counts.sum()


def scales_where_nonempty(token_counts):
    total = token_counts.sum().item()
    return torch.where(token_counts > 0, token_counts.double() / total, 0.0)


def scales_python_fractions(token_counts):
    from fractions import Fraction
    total = int(token_counts.sum())
    return torch.tensor([float(Fraction(int(n), total)) for n in token_counts.flatten().tolist()],
                        dtype=torch.float64).reshape(token_counts.shape)


# ------------------------------------------------------------------ packed_attention_mask

def _causal(doc_ids):
    positions = torch.arange(doc_ids.shape[-1], device=doc_ids.device)
    return positions[None, :] <= positions[:, None]


def _same_document(doc_ids):
    return doc_ids[..., :, None] == doc_ids[..., None, :]


def pam_not_causal(doc_ids):
    return _same_document(doc_ids)


def pam_causal_only(doc_ids):
    return torch.ones_like(_same_document(doc_ids)) & _causal(doc_ids)


def pam_transposed(doc_ids):
    positions = torch.arange(doc_ids.shape[-1])
    return _same_document(doc_ids) & (positions[None, :] >= positions[:, None])


def pam_diagonal_excluded(doc_ids):
    positions = torch.arange(doc_ids.shape[-1])        # a document's first token sees nothing: nan in attention
    return _same_document(doc_ids) & (positions[None, :] < positions[:, None])


def pam_float(doc_ids):
    return (_same_document(doc_ids) & _causal(doc_ids)).float()


def pam_one_row_only(doc_ids):
    return (doc_ids[:, None] == doc_ids[None, :]) & _causal(doc_ids)     # (B, T) ids: (B, B, T), not (B, T, T)


def pam_boundary_off_by_one(doc_ids):
    change = (doc_ids[..., 1:] != doc_ids[..., :-1]).long()
    segment = torch.cat([change, torch.zeros_like(change[..., :1])], -1).cumsum(-1)   # a document's last token
    return (segment[..., :, None] == segment[..., None, :]) & _causal(doc_ids)       # joins the next one


def pam_segments_from_boundaries(doc_ids):
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[..., 1:] = doc_ids[..., 1:] != doc_ids[..., :-1]
    segment = starts.long().cumsum(-1)
    return (segment[..., :, None] == segment[..., None, :]) & _causal(doc_ids)


def pam_block_diagonal_row_by_row(doc_ids):
    rows, T = (doc_ids if doc_ids.dim() == 2 else doc_ids[None]), doc_ids.shape[-1]
    masks = []
    for row in rows:
        mask, start = torch.zeros(T, T, dtype=torch.bool), 0
        for n in torch.unique_consecutive(row, return_counts=True)[1].tolist():
            mask[start:start + n, start:start + n] = torch.ones(n, n).tril().bool()
            start += n
        masks.append(mask)
    stacked = torch.stack(masks) if masks else torch.zeros(0, T, T, dtype=torch.bool)
    return stacked if doc_ids.dim() == 2 else stacked[0]


def pam_earlier_ids_not_larger(doc_ids):
    # ids never decrease along a row, so for j <= i: doc_j >= doc_i exactly when doc_j == doc_i
    return (doc_ids[..., None, :] >= doc_ids[..., :, None]) & _causal(doc_ids)


# ------------------------------------------------------------------ packed_loss_mask

def plm_every_target(doc_ids):
    return torch.ones_like(doc_ids, dtype=torch.bool)


def plm_only_the_row_start(doc_ids):
    mask = torch.ones_like(doc_ids, dtype=torch.bool)  # the first token of the row only, not of every document
    mask[..., :1] = False
    return mask


def plm_last_token_masked(doc_ids):
    continues = doc_ids[..., :-1] == doc_ids[..., 1:]   # False at the last token of each document, not the first
    return torch.cat([continues, torch.zeros_like(doc_ids[..., :1], dtype=torch.bool)], -1)


def plm_targets_shifted(doc_ids):
    return doc_ids[..., 1:] == doc_ids[..., :-1]       # (T - 1,): aligned with tokens[1:], not with tokens


def plm_float(doc_ids):
    return torch.cat([torch.zeros_like(doc_ids[..., :1]), (doc_ids[..., 1:] == doc_ids[..., :-1]).long()], -1).float()


def plm_first_tokens_instead(doc_ids):
    return torch.cat([torch.ones_like(doc_ids[..., :1], dtype=torch.bool), doc_ids[..., 1:] != doc_ids[..., :-1]], -1)


def plm_one_row_only(doc_ids):
    return torch.cat([torch.zeros(1, dtype=torch.bool), doc_ids[1:] == doc_ids[:-1]])


def plm_padded_one_too_many_at_length_0(doc_ids):
    return F.pad(doc_ids[..., 1:] == doc_ids[..., :-1], (1, 0), value=False)   # T = 0: one element


def plm_roll(doc_ids):
    same = doc_ids == doc_ids.roll(1, -1)
    same[..., :1] = False
    return same


def plm_positions_within_documents(doc_ids):
    positions = torch.arange(doc_ids.shape[-1]).expand(doc_ids.shape)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[..., 1:] = doc_ids[..., 1:] != doc_ids[..., :-1]
    start_of_document = torch.where(starts, positions, 0).cummax(-1).values
    return positions > start_of_document


EXERCISES = {
    "test_lm_loss": Exercise("lm_loss", differentiable=True, wrong={
        "padding counted": lm_loss_counts_padding,
        "targets not shifted": lm_loss_targets_not_shifted,
        "shifted the wrong way": lm_loss_shifted_the_wrong_way,
        "mean of per-sequence means": lm_loss_mean_of_sequence_means,
        "mask[:, :-1] instead of mask[:, 1:]": lm_loss_mask_off_by_one,
        "sum instead of mean": lm_loss_sum_not_mean,
        "divides by all positions, padding included": lm_loss_divides_by_all_positions,
        "log of softmax (overflows)": lm_loss_log_of_softmax,
        "one-hot product (0 * -inf = nan)": lm_loss_one_hot_product,
        "computed in bfloat16": lm_loss_in_bfloat16,
        "detached (not differentiable)": lm_loss_detached,
        "calls F.cross_entropy with ignore_index": lm_loss_calls_cross_entropy,
        "multiplies by the mask (0 * -inf = nan at a padding target)": lm_loss_multiplies_by_the_mask,
        "upcasts bfloat16 but computes float16 in float16": lm_loss_upcasts_only_bfloat16,
        "float64 loss for float32 logits": lm_loss_in_float64,
        "count clamped to 1 (0, not nan, when no target counts)": lm_loss_count_clamped_to_one,
    }, right={
        "boolean indexing, then a stable logsumexp": lm_loss_boolean_indexing_first,
        "per-sequence sums over the total count": lm_loss_sequence_sums_over_total,
    }),
    "test_sequence_log_likelihood": Exercise("sequence_log_likelihood", differentiable=True, wrong={
        "averaged instead of summed": sll_averaged,
        "negated (returns the NLL)": sll_negated,
        "padding counted": sll_counts_padding,
        "targets not shifted (first token counted)": sll_not_shifted,
        "mask[:, :-1] instead of mask[:, 1:]": sll_mask_off_by_one,
        "summed over the batch too": sll_summed_over_the_batch,
        "log of softmax (overflows)": sll_log_of_softmax,
        "calls F.cross_entropy(reduction='none')": sll_calls_cross_entropy,
        "multiplies by the mask (0 * -inf = nan at a padding target)": sll_multiplies_by_the_mask,
        "upcasts bfloat16 but computes float16 in float16": sll_upcasts_only_bfloat16,
        "float64 result for float32 logits": sll_in_float64,
    }, right={
        "loop over positions": sll_loop_over_positions,
        "masked_fill then sum": sll_masked_fill,
    }),
    "test_perplexity_from_batch_losses": Exercise("perplexity_from_batch_losses", wrong={
        "mean of batch perplexities": ppl_mean_of_batch_perplexities,
        "exp of the unweighted mean loss": ppl_unweighted_mean_of_losses,
        "weighted sum over the number of batches": ppl_weighted_sum_over_number_of_batches,
        "count-weighted mean of perplexities": ppl_weighted_mean_of_perplexities,
        "2 ** loss (bits) for a loss in nats": ppl_base_two,
        "forgot the exp": ppl_forgot_the_exp,
        "computed in the input's bfloat16": ppl_in_input_precision,
        "0 * nan: a batch of no tokens with a nan mean": ppl_weighted_sum_with_empty_batches,
    }, right={
        "float64 dot product": ppl_float64_dot,
        "math.fsum over Python floats": ppl_fsum,
    }),
    "test_causal_mask": Exercise("causal_mask", wrong={
        "all True (leaks the future)": mask_all_true,
        "diagonal excluded": mask_diagonal_excluded,
        "upper triangle (transposed)": mask_upper_triangle,
        "float 0/1 mask": mask_float_zeros_and_ones,
        "int64 mask": mask_int64,
        "calls tril": mask_calls_tril,
        "anti-diagonal": mask_anti_diagonal,
        "row by row with torch.stack (length 0 raises)": mask_row_by_row,
    }, right={
        "not in the future": mask_not_future,
        "cumsum of the identity": mask_cumsum_of_identity,
    }),
    "test_sample_next_token": Exercise("sample_next_token", wrong={
        "temperature multiplied instead of divided": sample_temperature_multiplied,
        "softmax without temperature": sample_ignores_temperature,
        "argmax always": sample_always_argmax,
        "top-k keeps k + 1": sample_top_k_keeps_k_plus_1,
        "top-k drops ties": sample_top_k_drops_ties,
        "top-k ignored": sample_ignores_top_k,
        "global RNG instead of the generator": sample_global_rng,
        "no greedy case at temperature 0": sample_no_greedy_case,
        "exp without subtracting the max": sample_exp_without_max,
        "softmax over the batch axis": sample_softmax_over_the_batch,
        "generator=None: a fresh torch.Generator() (the same draws every call)": sample_fresh_generator_when_none,
    }, right={
        "Gumbel-max trick": sample_gumbel_max,
        "inverse CDF with torch.rand": sample_inverse_cdf,
    }),
    "test_micro_batch_scales": Exercise("micro_batch_scales", wrong={
        "the mean of micro-batch means (1/M)": scales_mean_of_means,
        "1/M over the non-empty micro-batches": scales_mean_of_nonempty_means,
        "each rank divides by its own count": scales_per_rank,
        "R n / N (DDP's factor) where the all-reduce sums": scales_for_an_averaging_all_reduce,
        "1/N, the factor of a summed loss, on a mean": scales_one_over_total,
        "counts clamped to 1 (an empty micro-batch weighs 1)": scales_counts_clamped,
        "computed in float32": scales_in_float32,
        "integer division": scales_integer_division,
    }, right={
        "torch.where on the non-empty micro-batches": scales_where_nonempty,
        "Python fractions": scales_python_fractions,
    }),
    "test_packed_attention_mask": Exercise("packed_attention_mask", wrong={
        "not causal (block diagonal only)": pam_not_causal,
        "causal only (attends across documents)": pam_causal_only,
        "transposed (j >= i)": pam_transposed,
        "diagonal excluded (a document's first token sees nothing)": pam_diagonal_excluded,
        "float 0/1 mask": pam_float,
        "one row only ((B, T) gives (B, B, T))": pam_one_row_only,
        "boundary off by one (a last token joins the next document)": pam_boundary_off_by_one,
    }, right={
        "segments from the boundaries' cumsum": pam_segments_from_boundaries,
        "a causal block per document, row by row": pam_block_diagonal_row_by_row,
        "doc_j >= doc_i for j <= i": pam_earlier_ids_not_larger,
    }),
    "test_packed_loss_mask": Exercise("packed_loss_mask", wrong={
        "every target counts (across boundaries too)": plm_every_target,
        "only the row's first token left out": plm_only_the_row_start,
        "the last token of each document left out": plm_last_token_masked,
        "(T - 1,) mask of the shifted targets": plm_targets_shifted,
        "float 0/1 mask": plm_float,
        "True at the first tokens instead": plm_first_tokens_instead,
        "one row only": plm_one_row_only,
        "F.pad: one element at T = 0": plm_padded_one_too_many_at_length_0,
    }, right={
        "compare with the row rolled by one": plm_roll,
        "position within the document > 0": plm_positions_within_documents,
    }),
}

mutant_tests(globals())
