"""course_lib.contrastive against F.cross_entropy / F.logsigmoid in fp64 (notebooks 07, 08)."""
import pytest
import torch
import torch.nn.functional as F

from course_lib import contrastive as con


def torch_nt_xent(z1, z2, tau):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = F.cosine_similarity(z[:, None], z[None], dim=-1) / tau
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool), float("-inf"))
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, targets)


G = torch.Generator().manual_seed(0)
VIEWS = [
    ("ordinary", torch.randn(6, 5, generator=G, dtype=torch.float64),
     torch.randn(6, 5, generator=G, dtype=torch.float64)),
    ("nearly identical views", *(lambda a: (a, a + 0.01 * torch.randn(4, 8, generator=G, dtype=torch.float64)))(
        torch.randn(4, 8, generator=G, dtype=torch.float64))),
    ("scaled by 1e4", 1e4 * torch.randn(5, 3, generator=G, dtype=torch.float64),
     torch.randn(5, 3, generator=G, dtype=torch.float64)),
    ("one item", torch.randn(1, 4, generator=G, dtype=torch.float64),
     torch.randn(1, 4, generator=G, dtype=torch.float64)),
    ("a zero row (cosine 0 with every row, as F.normalize)",
     torch.randn(4, 3, generator=G, dtype=torch.float64).index_fill(0, torch.tensor([1]), 0.0),
     torch.randn(4, 3, generator=G, dtype=torch.float64)),
]


@pytest.mark.parametrize("label, z1, z2", VIEWS, ids=[v[0] for v in VIEWS])
@pytest.mark.parametrize("tau", [0.05, 0.5, 2.0])
def test_nt_xent_matches_cross_entropy_over_the_similarity_matrix(label, z1, z2, tau):
    torch.testing.assert_close(con.nt_xent(z1, z2, tau), torch_nt_xent(z1, z2, tau))


def test_nt_xent_is_symmetric_in_the_views_and_scale_invariant():
    _, z1, z2 = VIEWS[0]
    torch.testing.assert_close(con.nt_xent(z1, z2, 0.3), con.nt_xent(z2, z1, 0.3))
    torch.testing.assert_close(con.nt_xent(3 * z1, 0.1 * z2, 0.3), con.nt_xent(z1, z2, 0.3))


def test_info_nce_matches_cross_entropy_with_the_positive_first():
    q, p, neg = (torch.randn(n, 4, generator=G, dtype=torch.float64) for n in (5, 5, 7))
    qn, pn, nn_ = (F.normalize(x, dim=1) for x in (q, p, neg))
    logits = torch.cat([(qn * pn).sum(1, keepdim=True), qn @ nn_.T], 1) / 0.2
    torch.testing.assert_close(con.info_nce(q, p, neg, 0.2), F.cross_entropy(logits, torch.zeros(5, dtype=torch.long)))


REWARDS = torch.tensor([0.0, 1.5, -2.0, 30.0, -30.0, 1e3, -1e3, 1e4, -1e4], dtype=torch.float64)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bradley_terry_matches_minus_logsigmoid(reduction):
    rejected = torch.linspace(-1, 1, len(REWARDS), dtype=torch.float64)
    want = -F.logsigmoid(REWARDS - rejected)
    want = {"none": want, "mean": want.mean(), "sum": want.sum()}[reduction]
    torch.testing.assert_close(con.bradley_terry_loss(REWARDS, rejected, reduction=reduction), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bradley_terry_is_exact_for_huge_margins(dtype):
    got = con.bradley_terry_loss(torch.tensor([1e3, -1e3, 1e4], dtype=dtype), torch.zeros(3, dtype=dtype),
                                 reduction="none")
    assert got.tolist() == [0.0, 1e3, 0.0]


def test_log_sigmoid_gradient_is_f_logsigmoid_s_at_zero_and_at_huge_margins():
    # at x = 0 the one-expression form max(-x, 0) + log1p(exp(-|x|)) gets autograd's gradient 1, not sigma(0) = 1/2
    x = torch.tensor([0.0, -0.0, 1e-300, -1e-300, 0.5, -3.0, 30.0, -30.0, 1e4, -1e4], dtype=torch.float64)
    mine, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    con.log_sigmoid(mine).sum().backward()
    F.logsigmoid(theirs).sum().backward()
    torch.testing.assert_close(mine.grad, theirs.grad, rtol=0, atol=1e-15)
    torch.testing.assert_close(con.log_sigmoid(x), F.logsigmoid(x), rtol=0, atol=1e-15)


def test_bradley_terry_gradient_at_equal_rewards_is_one_half():
    rewards = torch.tensor([[-2.0, 0.5], [3.0, 7.0]], dtype=torch.float64)
    chosen, rejected = rewards.clone().requires_grad_(), rewards.clone().requires_grad_()
    con.bradley_terry_loss(chosen, rejected, reduction="sum").backward()
    assert chosen.grad.eq(-0.5).all() and rejected.grad.eq(0.5).all()


@pytest.mark.parametrize("shape", [(), (0,), (3, 4)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bradley_terry_in_every_rank_and_on_nothing_is_torch_s(shape, reduction):
    rc, rr = torch.randn(shape, generator=G, dtype=torch.float64), torch.randn(shape, generator=G, dtype=torch.float64)
    want = -F.logsigmoid(rc - rr)
    want = {"none": want, "mean": want.mean(), "sum": want.sum()}[reduction]   # an empty mean is nan
    torch.testing.assert_close(con.bradley_terry_loss(rc, rr, reduction=reduction), want, equal_nan=True)


def test_bradley_terry_is_two_way_cross_entropy():
    rc, rr = torch.randn(6, generator=G, dtype=torch.float64), torch.randn(6, generator=G, dtype=torch.float64)
    want = F.cross_entropy(torch.stack([rc, rr], 1), torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(con.bradley_terry_loss(rc, rr), want)


def test_half_inputs_give_float32():
    assert con.bradley_terry_loss(torch.ones(3).half(), torch.zeros(3).half()).dtype == torch.float32
    z = torch.randn(3, 4, generator=G).to(torch.bfloat16)
    assert con.nt_xent(z, z, 0.5).dtype == torch.float32


@pytest.mark.parametrize("call, match", [
    (lambda: con.nt_xent(torch.zeros(3, 4), torch.zeros(2, 4)), r"\(N, D\)"),
    (lambda: con.nt_xent(torch.ones(3, 4), torch.ones(3, 4), temperature=0.0), "temperature"),
    (lambda: con.info_nce(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(5, 3)), "negative_keys"),
    (lambda: con.bradley_terry_loss(torch.zeros(3), torch.zeros(4)), "same shape"),
    (lambda: con.bradley_terry_loss(torch.zeros(3), torch.zeros(3), reduction="avg"), "reduction"),
    (lambda: con.bradley_terry_loss(torch.zeros(3, dtype=torch.long), torch.zeros(3)), "floating"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
