"""course_lib.dpo against PyTorch in fp64 and against TRL's DPOTrainer formulas, restated here (notebook 09)."""
import copy

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
