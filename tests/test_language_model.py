"""The language-modelling loss references against PyTorch in float64, on ordinary and extreme logits."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import language_model as lm
from course_lib.gpt import GPT, GPTConfig


def _batch(seed=0, B=3, T=7, V=5, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale).to(dtype)
    tokens = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 5:] = False  # a padded sequence
    mask[2, 3:] = False
    return logits, tokens, mask


@pytest.mark.parametrize("scale", [1.0, 50.0, 1e4])
def test_lm_loss_is_cross_entropy_on_shifted_targets_with_padding_ignored(scale):
    logits, tokens, mask = _batch(scale=scale)
    targets = tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)
    assert torch.allclose(lm.lm_loss(logits, tokens, mask), expected, rtol=1e-12)
    assert torch.allclose(lm.lm_loss(logits, tokens), F.cross_entropy(logits[:, :-1].flatten(0, 1),
                                                                      tokens[:, 1:].flatten()), rtol=1e-12)


def test_lm_loss_weighs_tokens_not_sequences_and_low_precision_is_computed_in_fp32():
    logits, tokens, mask = _batch()
    per_sequence = -lm.sequence_log_likelihood(logits, tokens, mask) / mask[:, 1:].sum(-1)
    token_mean = lm.lm_loss(logits, tokens, mask)
    assert not torch.isclose(per_sequence.mean(), token_mean)  # the two means differ with ragged lengths
    half = lm.lm_loss(logits.bfloat16(), tokens, mask)
    assert half.dtype == torch.float32
    assert torch.isclose(half.double(), lm.lm_loss(logits.bfloat16().double(), tokens, mask), rtol=1e-5)


def test_sequence_log_likelihood_is_the_chain_rule_sum_over_counted_targets():
    logits, tokens, mask = _batch(scale=30.0)
    log_p = logits.log_softmax(-1)
    for b in range(3):
        expected = sum(log_p[b, t, tokens[b, t + 1]] for t in range(6) if mask[b, t + 1])
        assert torch.isclose(lm.sequence_log_likelihood(logits, tokens, mask)[b], expected, rtol=1e-12)


def test_minus_inf_logits_of_tokens_that_never_occur_give_finite_losses():
    logits, tokens, mask = _batch()
    banned = (tokens.max() + 1) % 5
    logits[..., banned] = -math.inf
    tokens = tokens.masked_fill(tokens == banned, (banned + 1) % 5)
    assert torch.isfinite(lm.lm_loss(logits, tokens, mask))
    assert torch.isfinite(lm.sequence_log_likelihood(logits, tokens)).all()


def test_a_padding_target_whose_log_probability_is_minus_inf_is_selected_out_not_multiplied():
    """The rule the course teaches: select the counted targets, never multiply by the mask (0 * -inf = nan)."""
    logits, tokens, mask = _batch()
    logits[0, 5, tokens[0, 6]] = -math.inf  # the padded target at position 6 of sequence 0 is impossible
    assert not mask[0, 6]
    clean = logits.clone()
    clean[0, 5, tokens[0, 6]] = 0.0  # what a padded position holds does not matter
    x = logits.clone().requires_grad_()
    loss = lm.lm_loss(x, tokens, mask)
    torch.testing.assert_close(loss, lm.lm_loss(clean, tokens, mask), rtol=1e-12, atol=0)
    targets = tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
    torch.testing.assert_close(loss, F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten()), rtol=1e-12,
                               atol=0)
    loss.backward()
    assert torch.isfinite(x.grad).all() and (x.grad[0, 5] == 0).all()
    y = logits.clone().requires_grad_()
    total = lm.sequence_log_likelihood(y, tokens, mask)
    torch.testing.assert_close(total, lm.sequence_log_likelihood(clean, tokens, mask), rtol=1e-12, atol=0)
    total.sum().backward()
    assert torch.isfinite(y.grad).all()


def test_perplexity_weighs_batch_means_by_their_token_counts():
    losses, counts = torch.tensor([2.0, 1.0]), torch.tensor([300, 100])
    assert math.isclose(lm.perplexity_from_batch_losses(losses, counts), math.exp(1.75))
    assert math.isclose(lm.perplexity_from_batch_losses(losses, torch.tensor([1, 1])), math.exp(1.5))


def test_lm_loss_with_no_counted_target_is_nan_as_cross_entropy_with_every_target_ignored():
    logits, tokens, _ = _batch()
    only_first = torch.zeros_like(tokens, dtype=torch.bool)
    only_first[:, 0] = True                              # every sequence one token long: nothing to predict
    ignored = torch.full_like(tokens[:, 1:], -100).flatten()
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), ignored, ignore_index=-100)
    assert expected.isnan() and lm.lm_loss(logits, tokens, only_first).isnan()
    assert lm.lm_loss(logits[:, :1], tokens[:, :1]).isnan()   # T = 1: no target at all
    assert torch.equal(lm.sequence_log_likelihood(logits, tokens, only_first), torch.zeros(3, dtype=torch.float64))


def test_perplexity_leaves_out_a_batch_of_no_tokens_whose_mean_loss_is_nan():
    """Batches of a held-out set, one of them all padding: its lm_loss is nan and its count 0. The perplexity is
    still that of every token together, exp of F.cross_entropy over the whole set."""
    logits, tokens, mask = _batch(seed=4, B=6, T=8, V=7)
    mask[2:4, 1:] = False                                 # the second batch of two sequences has no target
    targets = tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
    means, counts = [], []
    for rows in (slice(0, 2), slice(2, 4), slice(4, 6)):
        means.append(F.cross_entropy(logits[rows, :-1].flatten(0, 1), targets[rows].flatten(), ignore_index=-100))
        counts.append(int(mask[rows, 1:].sum()))
    assert means[1].isnan() and counts[1] == 0
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100).exp().item()
    got = lm.perplexity_from_batch_losses(torch.stack(means), torch.tensor(counts))
    assert math.isclose(got, expected, rel_tol=1e-12)


def test_sampling_follows_softmax_over_temperature_and_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    for temperature, top_k in [(1.0, None), (0.5, None), (2.0, 2)]:
        counts = torch.bincount(lm.sample_next_token(logits, temperature, top_k, generator=g), minlength=4)
        masked = logits[0] if top_k is None else logits[0].masked_fill(torch.arange(4) >= top_k, -math.inf)
        expected = torch.softmax(masked / temperature, -1) * 20000
        # 5 standard deviations of a binomial count: fails for a wrong temperature, passes by chance < 1e-5
        assert ((counts - expected).abs() <= 5 * (expected * (1 - expected / 20000)).sqrt() + 1e-9).all(), counts
    assert torch.equal(lm.sample_next_token(logits[:3], temperature=0), torch.zeros(3, dtype=torch.long))


def test_causal_mask_is_lower_triangular_bool():
    assert torch.equal(lm.causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))


# ---------------------------------------------------------------- the loss at scale: accumulation, ranks, packing

def _step(seed=0, lengths=(8, 3, 1, 1, 5, 2, 8, 6), T=8, V=7):
    """A float64 GPT and one optimizer step of sequences of ragged lengths (two of one token: no target)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    tokens = torch.randint(0, V, (len(lengths), T), generator=g)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=V, context=T, n_layer=1, n_head=2, d_model=16)).double()
    return model, tokens, torch.arange(T) < lengths[:, None]


def _flat_grad(*models):
    """The models' gradients as one vector, summed over the models (an all-reduce that sums)."""
    return sum(torch.cat([torch.zeros_like(p).flatten() if p.grad is None else p.grad.flatten()
                          for p in m.parameters()]) for m in models)


def _accumulated(replicas, tokens, mask, pieces, scales):
    """Rank r runs the r-th equal share of the micro-batches `pieces`, each mean loss times its scale, backward adding
    into .grad; a micro-batch without a target is skipped. Returns the gradients summed over the ranks."""
    per_rank = len(pieces) // len(replicas)
    for k, (piece, scale) in enumerate(zip(pieces, scales.flatten())):
        if mask[piece, 1:].any():
            (scale * lm.lm_loss(replicas[k // per_rank](tokens[piece]), tokens[piece], mask[piece])).backward()
    return _flat_grad(*replicas)


PIECES = [slice(0, 2), slice(2, 4), slice(4, 5), slice(5, 8)]          # 9, 0, 4 and 13 targets


def test_micro_batch_scales_make_accumulated_gradients_those_of_the_unsplit_batch_in_float64():
    model, tokens, mask = _step()
    fresh = copy.deepcopy(model)
    lm.lm_loss(model(tokens), tokens, mask).backward()
    unsplit = _flat_grad(model)
    counts = torch.stack([mask[piece, 1:].sum() for piece in PIECES])
    assert counts.tolist() == [9, 0, 4, 13]
    scales = lm.micro_batch_scales(counts)
    assert scales.dtype == torch.float64 and scales.tolist() == [9 / 26, 0.0, 4 / 26, 13 / 26]
    got = _accumulated([fresh], tokens, mask, PIECES, scales)
    assert (got - unsplit).abs().max() <= 1e-14 * unsplit.abs().max()
    fresh.zero_grad()
    bug = _accumulated([fresh], tokens, mask, PIECES, torch.full((4,), 0.25, dtype=torch.float64))
    assert (bug - unsplit).norm() > 0.05 * unsplit.norm()          # the mean of micro-batch means: another gradient


def test_data_parallel_scales_use_the_global_count_for_an_all_reduce_that_sums():
    model, tokens, mask = _step(seed=1)
    ranks = [copy.deepcopy(model), copy.deepcopy(model)]
    lm.lm_loss(model(tokens), tokens, mask).backward()
    unsplit = _flat_grad(model)
    counts = torch.stack([mask[piece, 1:].sum() for piece in PIECES]).reshape(2, 2).int()   # rank 0: 9 + 0, rank 1: 17
    scales = lm.micro_batch_scales(counts)
    assert scales.shape == (2, 2) and scales.dtype == torch.float64
    assert (_accumulated(ranks, tokens, mask, PIECES, scales) - unsplit).abs().max() <= 1e-14 * unsplit.abs().max()
    for replica in ranks:
        replica.zero_grad()
    own_count = counts.double() / counts.sum(-1, keepdim=True)                   # each rank its own mean
    assert (_accumulated(ranks, tokens, mask, PIECES, own_count) - unsplit).norm() > 0.05 * unsplit.norm()


def test_an_empty_micro_batch_scales_to_exactly_0_and_its_mean_is_nan_so_it_is_skipped_not_multiplied():
    model, tokens, mask = _step()
    scales = lm.micro_batch_scales(torch.tensor([0, 5, 0]))
    assert scales.tolist() == [0.0, 1.0, 0.0]
    empty = lm.lm_loss(model(tokens[2:4]), tokens[2:4], mask[2:4])     # two sequences of one token: no target
    assert empty.isnan() and (scales[0] * empty).isnan()
    assert lm.micro_batch_scales(torch.tensor([7])).tolist() == [1.0]
    big = torch.tensor([4_000_000, 3_000_001, 17])
    assert lm.micro_batch_scales(big).tolist() == [n / 7_000_018 for n in big.tolist()]   # one rounding each


def _brute_attention(doc_ids):
    T = doc_ids.shape[-1]
    return torch.tensor([[j <= i and doc_ids[i] == doc_ids[j] for j in range(T)] for i in range(T)], dtype=torch.bool)


def _ids(*lengths, start=0, step=1):
    return start + step * torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))


@pytest.mark.parametrize("doc_ids", [_ids(3, 1, 4, 2), _ids(6), torch.arange(5), _ids(2, 2, start=7, step=3).int(),
                                     torch.tensor([4]), _ids(9, 1, 12, 3, 7, 20, 2, 5, 5)])
def test_packed_masks_are_block_diagonal_causal_and_leave_out_the_first_token_of_every_document(doc_ids):
    T = doc_ids.shape[-1]
    attention, loss = lm.packed_attention_mask(doc_ids), lm.packed_loss_mask(doc_ids)
    assert attention.dtype == loss.dtype == torch.bool and attention.shape == (T, T) and loss.shape == (T,)
    assert torch.equal(attention, _brute_attention(doc_ids))
    assert attention.diagonal().all()                                     # no query row is all False
    assert loss.tolist() == [t > 0 and bool(doc_ids[t] == doc_ids[t - 1]) for t in range(T)]
    assert int(loss.sum()) == T - len(doc_ids.unique())                  # sum_d (L_d - 1) targets


def test_packed_masks_of_a_batch_are_those_of_each_row_and_an_empty_row_gives_empty_masks():
    rows = torch.stack([_ids(2, 4, 2), _ids(8), _ids(1, 1, 5, 1)])
    assert torch.equal(lm.packed_attention_mask(rows), torch.stack([_brute_attention(r) for r in rows]))
    assert torch.equal(lm.packed_loss_mask(rows), torch.stack([lm.packed_loss_mask(r) for r in rows]))
    empty = torch.zeros(0, dtype=torch.long)
    assert lm.packed_attention_mask(empty).shape == (0, 0) and lm.packed_loss_mask(empty).shape == (0,)
    assert lm.packed_attention_mask(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0, 0)
    assert lm.packed_loss_mask(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0)


def _packed_logits(model, tokens, doc_ids, attention, restart=True):
    lengths = torch.unique_consecutive(doc_ids, return_counts=True)[1].tolist()
    positions = torch.cat([torch.arange(n) for n in lengths]) if restart else torch.arange(len(doc_ids))
    x = model.token_embedding(tokens) + model.position_embedding(positions)
    for block in model.blocks:
        x = block(x, attention)
    return model.lm_head(model.ln_f(x))


def test_a_packed_row_computes_each_document_as_if_it_were_alone_in_float64():
    lengths = [5, 2, 1, 6, 2]
    doc_ids = _ids(*lengths)
    tokens = torch.randint(0, 7, (1, 16), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, context=16, n_layer=2, n_head=2, d_model=16)).double().eval()
    starts = torch.tensor([0] + lengths).cumsum(0).tolist()
    with torch.no_grad():
        packed = _packed_logits(model, tokens, doc_ids, lm.packed_attention_mask(doc_ids))
        apart = torch.cat([model(tokens[:, s:s + n]) for s, n in zip(starts, lengths)], dim=1)
        assert (packed - apart).abs().max() < 1e-12
        loss = lm.lm_loss(packed, tokens, lm.packed_loss_mask(doc_ids)[None])
        sums = [-lm.sequence_log_likelihood(model(tokens[:, s:s + n]), tokens[:, s:s + n]) for s, n in
                zip(starts, lengths)]
        torch.testing.assert_close(loss, torch.cat(sums).sum() / sum(n - 1 for n in lengths), rtol=1e-12, atol=0)
        # each of the three rules is needed: the causal mask alone, or positions that do not restart, change them
        causal_only = _packed_logits(model, tokens, doc_ids, lm.causal_mask(16))
        not_restarted = _packed_logits(model, tokens, doc_ids, lm.packed_attention_mask(doc_ids), restart=False)
        assert (causal_only - apart).abs().max() > 1e-3 and (not_restarted - apart).abs().max() > 1e-3
        assert not torch.isclose(lm.lm_loss(packed, tokens), loss)       # every target counted: another loss


@pytest.mark.parametrize("call, message", [
    (lambda: lm.lm_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long)),
     r"logits \(B, T, V\) and tokens \(B, T\)"),
    (lambda: lm.lm_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3)), "integer tensor"),
    (lambda: lm.lm_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3)), "bool tensor"),
    (lambda: lm.perplexity_from_batch_losses(torch.ones(2), torch.zeros(2)), "positive total"),
    (lambda: lm.sample_next_token(torch.zeros(1, 3), temperature=-1.0), r"temperature must be >= 0 \(0 = greedy\)"),
    (lambda: lm.sample_next_token(torch.zeros(1, 3), top_k=0), "top_k must be an int >= 1 or None, got 0"),
    (lambda: lm.sample_next_token(torch.zeros(1, 3), top_k=2.5), "top_k must be an int >= 1 or None"),
    (lambda: lm.micro_batch_scales(torch.tensor([1.0, 2.0])), r"\(M,\) or \(ranks, M\) integer tensor"),
    (lambda: lm.micro_batch_scales(torch.tensor(3)), r"\(M,\) or \(ranks, M\) integer tensor, got torch.int64 \(\)"),
    (lambda: lm.micro_batch_scales([3, 1]), r"integer tensor, got list"),
    (lambda: lm.micro_batch_scales(torch.tensor([3, -1])), "non-negative with a positive total"),
    (lambda: lm.micro_batch_scales(torch.tensor([0, 0])), "non-negative with a positive total"),
    (lambda: lm.micro_batch_scales(torch.zeros(0, dtype=torch.long)), "non-negative with a positive total"),
    (lambda: lm.packed_attention_mask(torch.tensor([0, 1, 0])), "nondecreasing along each row"),
    (lambda: lm.packed_loss_mask(torch.tensor([[0, 0], [2, 1]])), "nondecreasing along each row"),
    (lambda: lm.packed_loss_mask(torch.tensor([0.0, 1.0])), r"\(T,\) or \(B, T\) integer tensor"),
    (lambda: lm.packed_attention_mask(torch.tensor(2)), r"\(T,\) or \(B, T\) integer tensor"),
])
def test_bad_inputs_are_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()
