"""course_lib.dpo against PyTorch in fp64, loops and autograd, and against the formulas of TRL's DPOTrainer, CPOTrainer
(SimPO), KTOTrainer and ORPOTrainer, restated here (notebook 09)."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib import dpo

G = torch.Generator().manual_seed(0)


def torch_response_logps(logits, tokens, response_mask):
    """Per-token cross-entropy of logits[:, :-1] against tokens[:, 1:], kept where response_mask[:, 1:]."""
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    return -(nll * response_mask[:, 1:]).sum(-1)


def trl_sigmoid_loss(pc, pr, rc, rr, beta, label_smoothing=0.0, reference_free=False):
    """TRL DPOTrainer, loss_type="sigmoid": per-example losses and detached implicit rewards."""
    ref_logratios = torch.zeros_like(rc) if reference_free else rc - rr
    logits = (pc - pr) - ref_logratios
    losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    return losses, beta * (pc - rc).detach(), beta * (pr - rr).detach()


def batch_with_prompts(B=4, T=10, V=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=dtype)
    tokens = torch.randint(0, V, (B, T), generator=g)
    prompt_len = torch.randint(1, 4, (B,), generator=g)
    end = torch.randint(5, T + 1, (B,), generator=g)
    pos = torch.arange(T)
    return logits, tokens, (pos >= prompt_len[:, None]) & (pos < end[:, None])


def logps(seed, n=8, scale=20.0):
    g = torch.Generator().manual_seed(seed)
    return [-scale * torch.rand(n, generator=g, dtype=torch.float64) for _ in range(4)]


@pytest.mark.parametrize("seed", range(3))
def test_sequence_logprobs_sums_response_targets_only(seed):
    logits, tokens, mask = batch_with_prompts(seed=seed)
    torch.testing.assert_close(dpo.sequence_logprobs(logits, tokens, mask), torch_response_logps(logits, tokens, mask))


def test_sequence_logprobs_worked_example_and_extremes():
    probs = torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.25, 0.75], [0.6, 0.4]]], dtype=torch.float64)
    tokens = torch.tensor([[0, 1, 1, 0]])             # prompt = token 0; response = tokens 1, 2; token 3 is padding
    mask = torch.tensor([[False, True, True, False]])
    torch.testing.assert_close(dpo.sequence_logprobs(probs.log(), tokens, mask),
                               torch.tensor([0.5, 0.1], dtype=torch.float64).log().sum()[None])
    logits, tokens, mask = batch_with_prompts(seed=5)
    logits[..., 0], logits[..., 1] = 1e4, -1e4
    got = dpo.sequence_logprobs(logits, tokens, mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, torch_response_logps(logits, tokens, mask))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("beta", [0.05, 0.5, 3.0])
def test_dpo_loss_matches_trl_sigmoid(beta, label_smoothing):
    args = logps(int(beta * 100))
    got = dpo.dpo_loss(*args, beta, label_smoothing=label_smoothing)
    want = trl_sigmoid_loss(*args, beta, label_smoothing)
    for g_, w in zip(got, want):
        torch.testing.assert_close(g_, w)


def test_reference_free_takes_reference_logps_as_zero():
    args = logps(7)
    losses, chosen, rejected = dpo.dpo_loss(*args, 0.3, reference_free=True)
    torch.testing.assert_close(losses, trl_sigmoid_loss(*args, 0.3, reference_free=True)[0])
    torch.testing.assert_close(chosen, 0.3 * args[0])
    torch.testing.assert_close(rejected, 0.3 * args[1])


def test_dpo_loss_is_exact_and_finite_for_huge_margins():
    h = torch.tensor([1e4, -1e4, 1e5, -1e5], dtype=torch.float64)
    zeros = torch.zeros(4, dtype=torch.float64)
    losses, _, _ = dpo.dpo_loss(h, zeros, zeros, zeros, 1.0)
    assert losses.tolist() == [0.0, 1e4, 0.0, 1e5]
    smoothed, _, _ = dpo.dpo_loss(h.float(), zeros.float(), zeros.float(), zeros.float(), 1.0, label_smoothing=0.1)
    assert torch.isfinite(smoothed).all()
    torch.testing.assert_close(smoothed.double(), trl_sigmoid_loss(h, zeros, zeros, zeros, 1.0, 0.1)[0])


def test_dpo_gradient_and_detached_rewards():
    pc, pr, rc, rr = (x.requires_grad_(True) for x in logps(3))
    losses, chosen, rejected = dpo.dpo_loss(pc, pr, rc, rr, 0.5, label_smoothing=0.2)
    assert not chosen.requires_grad and not rejected.requires_grad
    losses.sum().backward()
    h = ((pc - pr) - (rc - rr)).detach()
    want = -0.5 * (0.8 * torch.sigmoid(-0.5 * h) - 0.2 * torch.sigmoid(0.5 * h))  # d loss / d pi_c
    torch.testing.assert_close(pc.grad, want)
    torch.testing.assert_close(rc.grad, -want)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_dpo_gradient_where_policy_is_reference_is_trl_s(label_smoothing):
    # h = 0 exactly, as at DPO's first step: the gradient -beta (1 - 2 eps) / 2 per unit h, not twice that
    pc, pr, _, _ = logps(4)
    mine = [x.clone().requires_grad_() for x in (pc, pr)]
    theirs = [x.clone().requires_grad_() for x in (pc, pr)]
    dpo.dpo_loss(*mine, pc, pr, 0.5, label_smoothing=label_smoothing)[0].sum().backward()
    trl_sigmoid_loss(*theirs, pc, pr, 0.5, label_smoothing)[0].sum().backward()
    for m, t in zip(mine, theirs):
        torch.testing.assert_close(m.grad, t.grad)
    torch.testing.assert_close(mine[0].grad, torch.full_like(pc, -0.25 * (1 - 2 * label_smoothing)))


def test_sequence_logprobs_ignores_impossible_targets_that_do_not_count():
    logits, tokens, mask = batch_with_prompts(seed=6)
    b, t = (~mask[:, 1:]).nonzero(as_tuple=True)
    logits[b, t, tokens[b, t + 1]] = -torch.inf     # prompt and padding targets of probability 0
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    want = -torch.where(mask[:, 1:], nll, 0.0).sum(-1)             # selected: 0 * inf would be nan
    got = dpo.sequence_logprobs(logits, tokens, mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)
    one = dpo.sequence_logprobs(logits[:, :1], tokens[:, :1], torch.ones_like(mask[:, :1]))
    torch.testing.assert_close(one, torch.zeros(len(tokens), dtype=torch.float64))     # T = 1: nothing predicted


def test_ipo_matches_its_formula():
    args = logps(11, scale=3.0)
    for beta in (0.1, 1.0, 4.0):
        h = (args[0] - args[1]) - (args[2] - args[3])
        torch.testing.assert_close(dpo.ipo_loss(*args, beta), (h - 1 / (2 * beta)) ** 2)
    big = [torch.tensor([1e4]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0])]
    assert torch.isfinite(dpo.ipo_loss(*big, 0.1)).all()


def test_low_precision_inputs_are_computed_in_float32():
    args = [x.to(torch.bfloat16) for x in logps(2)]
    assert all(t.dtype == torch.float32 for t in dpo.dpo_loss(*args, 0.1))
    assert dpo.ipo_loss(*args, 0.1).dtype == torch.float32
    logits, tokens, mask = batch_with_prompts(dtype=torch.float32)
    assert dpo.sequence_logprobs(logits.to(torch.bfloat16), tokens, mask).dtype == torch.float32


class Bigram(nn.Module):
    def __init__(self, vocab=5):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, tokens):
        return self.table(tokens)


def preference_batch(seed=0, B=6, T=7, V=5):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(T) >= 2
    return {"chosen": torch.randint(0, V, (B, T), generator=g), "rejected": torch.randint(0, V, (B, T), generator=g),
            "chosen_mask": mask.expand(B, T).clone(), "rejected_mask": mask.expand(B, T).clone()}


def test_dpo_step_takes_one_step_on_the_mean_loss_and_leaves_the_reference_alone():
    torch.manual_seed(0)
    reference = Bigram()
    policy = copy.deepcopy(reference)
    with torch.no_grad():
        policy.table.weight.add_(0.3 * torch.randn_like(policy.table.weight))
    twin = copy.deepcopy(policy)
    ref_before = reference.table.weight.detach().clone()
    batch = preference_batch()
    optimizer, twin_optimizer = torch.optim.SGD(policy.parameters(), lr=0.5), torch.optim.SGD(twin.parameters(), lr=0.5)
    for _ in range(2):   # two calls: gradients must not accumulate
        loss = dpo.dpo_step(policy, reference, batch, optimizer, beta=0.2)
        ids = {k: v for k, v in batch.items()}
        pc = torch_response_logps(twin(ids["chosen"]), ids["chosen"], ids["chosen_mask"])
        pr = torch_response_logps(twin(ids["rejected"]), ids["rejected"], ids["rejected_mask"])
        with torch.no_grad():
            rc = torch_response_logps(reference(ids["chosen"]), ids["chosen"], ids["chosen_mask"])
            rr = torch_response_logps(reference(ids["rejected"]), ids["rejected"], ids["rejected_mask"])
        want = trl_sigmoid_loss(pc, pr, rc, rr, 0.2)[0].mean()
        twin_optimizer.zero_grad()
        want.backward()
        twin_optimizer.step()
        assert loss == pytest.approx(want.item(), rel=1e-6)
        torch.testing.assert_close(policy.table.weight, twin.table.weight)
    assert torch.equal(reference.table.weight, ref_before) and reference.table.weight.grad is None


@pytest.mark.parametrize("call, message", [
    (lambda: dpo.sequence_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3)),
     "bool"),
    (lambda: dpo.sequence_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long),
                                   torch.ones(2, 4, dtype=torch.bool)), r"\(B, T, V\)"),
    (lambda: dpo.dpo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(2), torch.zeros(3), 0.1), "same shape"),
    (lambda: dpo.dpo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3), 0.0), "beta"),
    (lambda: dpo.dpo_loss(*[torch.zeros(3)] * 4, 0.1, label_smoothing=0.7), "label_smoothing"),
    (lambda: dpo.ipo_loss(*[torch.zeros(3)] * 4, -1.0), "beta"),
    (lambda: dpo.dpo_loss(*[torch.zeros(3, dtype=torch.long)] * 4, 0.1), "floating"),
])
def test_bad_inputs_raise_value_errors_that_name_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------- SimPO, KTO, ORPO

def trl_simpo_loss(avg_c, avg_r, beta, gamma, label_smoothing=0.0):
    """TRL CPOTrainer, loss_type="simpo" (cpo_alpha=0), on log-probs it has averaged over the response tokens."""
    logits = (avg_c - avg_r) - gamma / beta
    losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    return losses, beta * avg_c.detach(), beta * avg_r.detach()


def trl_kto_loss(policy_chosen, policy_rejected, policy_kl, ref_chosen, ref_rejected, ref_kl, beta,
                 desirable_weight=1.0, undesirable_weight=1.0):
    """TRL KTOTrainer, loss_type="kto": the desirable examples' losses, then the undesirable ones'."""
    kl = (policy_kl - ref_kl).mean().detach().clamp(min=0)
    chosen_losses = 1 - torch.sigmoid(beta * ((policy_chosen - ref_chosen) - kl))
    rejected_losses = 1 - torch.sigmoid(beta * (kl - (policy_rejected - ref_rejected)))
    return torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses), 0), kl


def trl_odds_ratio_loss(avg_c, avg_r, beta):
    """TRL ORPOTrainer.odds_ratio_loss: beta * log sigma(log odds ratio) (subtracted from the NLL), and the ratio."""
    log_odds = (avg_c - avg_r) - (torch.log1p(-torch.exp(avg_c)) - torch.log1p(-torch.exp(avg_r)))
    return beta * F.logsigmoid(log_odds), log_odds


def lengths_and_logps(seed, n=12, longest=9):
    g = torch.Generator().manual_seed(seed)
    nc, nr = torch.randint(1, longest, (n,), generator=g), torch.randint(1, longest, (n,), generator=g)
    pc = -2 * torch.rand(n, generator=g, dtype=torch.float64) * nc
    pr = -2 * torch.rand(n, generator=g, dtype=torch.float64) * nr
    return pc, pr, nc, nr


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("beta, gamma", [(0.5, 0.0), (2.0, 1.0), (10.0, 4.0)])
def test_simpo_matches_trl_on_averaged_logps(beta, gamma, label_smoothing):
    pc, pr, nc, nr = lengths_and_logps(int(10 * beta + gamma))
    got = dpo.simpo_loss(pc, pr, nc, nr, beta, gamma, label_smoothing=label_smoothing)
    want = trl_simpo_loss(pc / nc, pr / nr, beta, gamma, label_smoothing)
    for g_, w in zip(got, want):
        torch.testing.assert_close(g_, w)


def test_simpo_averages_the_token_logps_of_each_response():
    # the average the loss uses is the mean over a response's tokens of their log-probabilities (a loop)
    logits, tokens, mask = batch_with_prompts(B=6, T=10, seed=9)
    summed = dpo.sequence_logprobs(logits, tokens, mask)
    lengths = mask[:, 1:].sum(-1)
    _, rewards, _ = dpo.simpo_loss(summed, summed, lengths, lengths, 1.0, 0.0)
    log_p = logits.log_softmax(-1)
    for b in range(len(tokens)):
        terms = [log_p[b, t, tokens[b, t + 1]] for t in range(tokens.shape[1] - 1) if mask[b, t + 1]]
        torch.testing.assert_close(rewards[b], sum(terms) / len(terms))


def test_simpo_gradient_is_autograd_of_the_objective_also_at_the_margin():
    # t = 0 exactly (a_c - a_r = gamma / beta in dyadic numbers): TRL's F.logsigmoid has the right slope there
    pc, nc = torch.tensor([-3.0, -1.0, -6.0, -2.0], dtype=torch.float64), torch.tensor([4, 2, 8, 1])
    pr, nr = torch.tensor([-10.0, -4.0, -5.0, -5.0], dtype=torch.float64), torch.tensor([8, 4, 4, 2])
    for eps in (0.0, 0.1):
        mine, theirs = pc.clone().requires_grad_(), pc.clone().requires_grad_()
        dpo.simpo_loss(mine, pr, nc, nr, 2.0, 1.0, label_smoothing=eps)[0].sum().backward()
        trl_simpo_loss(theirs / nc, pr / nr, 2.0, 1.0, eps)[0].sum().backward()
        torch.testing.assert_close(mine.grad, theirs.grad)
        torch.testing.assert_close(mine.grad, -(1 - 2 * eps) / 2 * 2.0 / nc.double())


def test_simpo_is_exact_for_huge_margins_and_empty_batches_and_computes_in_float32():
    t = torch.tensor([1e4, -1e4, 1e5], dtype=torch.float64)
    losses, _, _ = dpo.simpo_loss(t, torch.zeros(3, dtype=torch.float64), torch.ones(3), torch.ones(3), 1.0, 0.0)
    assert losses.tolist() == [0.0, 1e4, 0.0]
    empty = dpo.simpo_loss(torch.zeros(0), torch.zeros(0), torch.ones(0), torch.ones(0), 2.0, 1.0)
    assert all(x.shape == (0,) for x in empty)
    pc, pr, nc, nr = lengths_and_logps(3)
    low = dpo.simpo_loss(pc.to(torch.bfloat16), pr.to(torch.bfloat16), nc, nr, 2.0, 0.5)
    assert all(x.dtype == torch.float32 for x in low)
    assert dpo.simpo_loss(pc.float(), pr.float(), nc.double(), nr.double(), 2.0, 0.5)[0].dtype == torch.float32


def kto_batch(seed, n=10):
    g = torch.Generator().manual_seed(seed)
    policy, ref = (-10 * torch.rand(n, generator=g, dtype=torch.float64) for _ in range(2))
    desirable = torch.rand(n, generator=g) < 0.5
    policy_kl, ref_kl = (-10 * torch.rand(7, generator=g, dtype=torch.float64) for _ in range(2))
    return policy, ref, desirable, policy_kl, ref_kl


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 1.33), (2.0, 0.5)])
@pytest.mark.parametrize("beta", [0.1, 0.5, 3.0])
def test_kto_matches_trl_with_the_examples_in_their_places(beta, weights):
    for seed in range(4):
        policy, ref, desirable, policy_kl, ref_kl = kto_batch(seed + int(10 * beta))
        got = dpo.kto_loss(policy, ref, desirable, beta, policy_kl_logps=policy_kl, ref_kl_logps=ref_kl,
                           desirable_weight=weights[0], undesirable_weight=weights[1])
        want, kl = trl_kto_loss(policy[desirable], policy[~desirable], policy_kl, ref[desirable], ref[~desirable],
                                ref_kl, beta, *weights)
        torch.testing.assert_close(torch.cat([got[desirable], got[~desirable]]), want)
        # the same numbers with the reference point given instead of estimated
        torch.testing.assert_close(dpo.kto_loss(policy, ref, desirable, beta, z0=kl.item(), desirable_weight=weights[0],
                                                undesirable_weight=weights[1]), got)


def test_kto_reference_point_is_the_clamped_mean_log_ratio_and_carries_no_gradient():
    policy_kl = torch.tensor([-6.0, -7.0, -5.0], dtype=torch.float64, requires_grad=True)
    ref_kl = torch.tensor([-6.5, -6.0, -6.4], dtype=torch.float64, requires_grad=True)
    z0 = dpo.kto_reference_point(policy_kl, ref_kl)
    assert z0.shape == () and not z0.requires_grad
    torch.testing.assert_close(z0, torch.tensor(0.3, dtype=torch.float64))
    assert dpo.kto_reference_point(ref_kl, policy_kl).item() == 0.0              # mean -0.3, clamped
    policy = torch.tensor([-3.0, -5.0], dtype=torch.float64, requires_grad=True)
    losses = dpo.kto_loss(policy, torch.tensor([-4.0, -4.5], dtype=torch.float64), torch.tensor([True, False]), 0.5,
                          policy_kl_logps=policy_kl, ref_kl_logps=ref_kl)
    losses.sum().backward()
    assert policy_kl.grad is None and ref_kl.grad is None
    given = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros(2, dtype=torch.float64)
    dpo.kto_loss(policy, zeros, torch.tensor([True, False]), 0.5, z0=given).sum().backward()
    assert given.grad is None and policy.grad is not None


def test_kto_gradient_is_autograd_of_the_value_function():
    # d/dr of w_D (1 - sigma(beta (r - z0))) = -w_D beta s (1 - s), s = sigma(beta (r - z0)); of the undesirable
    # loss w_U (1 - sigma(beta (z0 - r))): +w_U beta u (1 - u), u = sigma(beta (z0 - r))
    policy, ref, desirable, _, _ = kto_batch(5)
    policy.requires_grad_(True)
    dpo.kto_loss(policy, ref, desirable, 0.7, z0=0.4, desirable_weight=1.2, undesirable_weight=0.8).sum().backward()
    r = (policy - ref).detach()
    s, u = torch.sigmoid(0.7 * (r - 0.4)), torch.sigmoid(0.7 * (0.4 - r))
    want = torch.where(desirable, -1.2 * 0.7 * s * (1 - s), 0.8 * 0.7 * u * (1 - u))
    torch.testing.assert_close(policy.grad, want)


def test_kto_saturates_exactly_for_huge_rewards_and_keeps_empty_batches_empty():
    r = torch.tensor([1e4, -1e4, 1e4, -1e4])
    losses = dpo.kto_loss(r, torch.zeros(4), torch.tensor([True, True, False, False]), 1.0, z0=0.0)
    assert losses.tolist() == [0.0, 1.0, 1.0, 0.0]
    empty = dpo.kto_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.bool), 0.5,
                         policy_kl_logps=torch.ones(3), ref_kl_logps=torch.zeros(3))
    assert empty.shape == (0,)
    policy, ref, desirable, policy_kl, ref_kl = kto_batch(1)
    low = dpo.kto_loss(policy.to(torch.bfloat16), ref.to(torch.bfloat16), desirable, 0.5,
                       policy_kl_logps=policy_kl.half(), ref_kl_logps=ref_kl.half())
    assert low.dtype == torch.float32


@pytest.mark.parametrize("lam", [0.0, 0.1, 1.0])
def test_orpo_matches_trl_where_its_formula_is_accurate(lam):
    # TRL: loss = NLL(chosen) - mean(beta * log sigma(log odds)); per pair, NLL is -a_c
    pc, pr, nc, nr = lengths_and_logps(int(10 * lam))
    losses, log_odds_ratio = dpo.orpo_loss(pc, pr, nc, nr, lam)
    odds_term, trl_ratio = trl_odds_ratio_loss(pc / nc, pr / nr, lam)
    torch.testing.assert_close(losses, -pc / nc - odds_term)
    torch.testing.assert_close(log_odds_ratio, trl_ratio)
    assert not log_odds_ratio.requires_grad


def test_orpo_sft_term_is_trl_s_token_mean_nll_when_the_chosen_responses_have_one_length():
    g = torch.Generator().manual_seed(4)
    logits, tokens = torch.randn(5, 9, 6, generator=g, dtype=torch.float64), torch.randint(0, 6, (5, 9), generator=g)
    mask = torch.zeros(5, 9, dtype=torch.bool)
    mask[:, 3:8] = True                                      # prompt 0-2, a 5-token response, 1 padding token
    summed = dpo.sequence_logprobs(logits, tokens, mask)
    losses, _ = dpo.orpo_loss(summed, summed - 1.0, mask.sum(-1), mask.sum(-1), 0.0)
    labels = torch.where(mask[:, 1:], tokens[:, 1:], -100)
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, 6), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(losses.mean(), nll)


def test_log1m_exp_is_exact_at_both_ends_with_finite_gradients():
    a = -torch.logspace(-12, 4, 81, dtype=torch.float64)
    want = torch.tensor([math.log(-math.expm1(x)) if x > -math.log(2) else math.log1p(-math.exp(x))
                         for x in a.tolist()], dtype=torch.float64)
    torch.testing.assert_close(dpo.log1m_exp(a), want, rtol=1e-13, atol=0)
    a32 = (-torch.logspace(-8, 4, 49)).requires_grad_(True)   # float32: exp(-1e-8) is exactly 1 there
    out = dpo.log1m_exp(a32)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), dpo.log1m_exp(a32.detach().double()), rtol=1e-6, atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(a32.grad).all()
    # (below a = -87 float32's e^a underflows to 0, and so does the gradient, -e^a / (1 - e^a))
    torch.testing.assert_close(a32.grad.double(), -1 / torch.expm1(-a32.detach().double()), rtol=1e-5, atol=1e-30)


def test_orpo_is_accurate_where_trl_s_log1p_cancels_and_where_p_underflows():
    # float32 averages of -1e-8 and -1e-7: TRL's log1p(-exp(a)) gives -inf and a rounded value; exact: log(-expm1(a))
    pc, pr, ones = torch.tensor([-1e-8]), torch.tensor([-1e-7]), torch.ones(1)
    losses, d = dpo.orpo_loss(pc, pr, ones, ones, 1.0)
    exact = (-1e-8 - math.log(-math.expm1(-1e-8))) - (-1e-7 - math.log(-math.expm1(-1e-7)))
    assert d.item() == pytest.approx(exact, rel=1e-5)
    assert losses.item() == pytest.approx(1e-8 + math.log1p(math.exp(-exact)), rel=1e-6)
    assert not torch.isfinite(trl_odds_ratio_loss(pc, pr, 1.0)[1]).all()
    losses, d = dpo.orpo_loss(torch.tensor([-1.0, -1e4]), torch.tensor([-1e4, -1e4]), torch.ones(2), torch.ones(2), 1.0)
    lo = -1.0 - math.log1p(-math.exp(-1.0))
    torch.testing.assert_close(d, torch.tensor([lo + 1e4, 0.0]))
    torch.testing.assert_close(losses, torch.tensor([1.0, 1e4 + math.log(2)]))


def test_orpo_gradient_is_autograd_of_trl_s_objective_also_at_zero_margin():
    pc, pr, nc, nr = lengths_and_logps(6)
    for rejected, lengths in ((pr, nr), (2 * pc, 2 * nc)):          # the second: d = 0 exactly
        mine, theirs = pc.clone().requires_grad_(), pc.clone().requires_grad_()
        dpo.orpo_loss(mine, rejected, nc, lengths, 0.5)[0].sum().backward()
        odds_term, _ = trl_odds_ratio_loss(theirs / nc, rejected / lengths, 0.5)
        (-theirs / nc - odds_term).sum().backward()
        torch.testing.assert_close(mine.grad, theirs.grad)


def test_orpo_low_precision_and_empty_batches():
    pc, pr, nc, nr = lengths_and_logps(8)
    assert all(x.dtype == torch.float32 for x in dpo.orpo_loss(pc.half(), pr.half(), nc, nr, 0.1))
    empty = dpo.orpo_loss(torch.zeros(0), torch.zeros(0), torch.ones(0), torch.ones(0), 0.1)
    assert all(x.shape == (0,) for x in empty)


@pytest.mark.parametrize("call, message", [
    (lambda: dpo.simpo_loss(*[torch.zeros(3)] * 2, torch.ones(3), torch.zeros(3), 2.0, 1.0), "rejected_lengths.*> 0"),
    (lambda: dpo.simpo_loss(*[torch.zeros(3)] * 2, torch.ones(2), torch.ones(3), 2.0, 1.0), "same shape"),
    (lambda: dpo.simpo_loss(*[torch.zeros(3)] * 2, torch.ones(3, dtype=torch.bool), torch.ones(3), 2.0, 1.0),
     "lengths"),
    (lambda: dpo.simpo_loss(*[torch.zeros(3)] * 2, torch.ones(3), torch.ones(3), 2.0, -1.0), "gamma"),
    (lambda: dpo.simpo_loss(*[torch.zeros(3)] * 2, torch.ones(3), torch.ones(3), 0.0, 1.0), "beta"),
    (lambda: dpo.kto_loss(torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool), 0.5), "give z0"),
    (lambda: dpo.kto_loss(torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool), 0.5, z0=0.1,
                          policy_kl_logps=torch.zeros(2), ref_kl_logps=torch.zeros(2)), "not both"),
    (lambda: dpo.kto_loss(torch.zeros(3), torch.zeros(3), torch.ones(3), 0.5, z0=0.1), "bool"),
    (lambda: dpo.kto_loss(torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool), 0.5,
                          policy_kl_logps=torch.zeros(0), ref_kl_logps=torch.zeros(0)), "at least one"),
    (lambda: dpo.kto_loss(torch.zeros(3), torch.zeros(2), torch.ones(3, dtype=torch.bool), 0.5, z0=0.1), "same shape"),
    (lambda: dpo.orpo_loss(*[torch.zeros(3)] * 2, torch.ones(3), torch.ones(3), -0.1), "lam"),
])
def test_bad_inputs_to_the_relatives_raise_value_errors_that_name_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()
