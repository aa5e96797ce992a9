"""course_lib.normalization against torch.nn's BatchNorm1d, LayerNorm, RMSNorm and autograd in fp64 (notebook 05)."""
import pytest
import torch
import torch.nn.functional as F

from course_lib import normalization as norm

D = torch.float64


def _rows(seed=0, shape=(6, 5)):
    g = torch.Generator().manual_seed(seed)
    ordinary = torch.randn(*shape, generator=g, dtype=D)
    constant = ordinary.clone()
    constant[1] = 3.0                                  # a row (token) with variance 0
    return {"ordinary": ordinary, "constant row": constant, "around 1e4": 1e4 * ordinary,
            "tiny (1e-4)": 1e-4 * ordinary, "shifted (+1e3)": ordinary + 1e3}


ROWS = _rows()


def _affine(size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 1 + 0.5 * torch.randn(size, generator=g, dtype=D), 0.5 * torch.randn(size, generator=g, dtype=D)


# ------------------------------------------------------------------ batchnorm

@pytest.mark.parametrize("shape", [(8, 4), (3, 4, 5), (1, 4, 6)])
@pytest.mark.parametrize("momentum, eps", [(0.1, 1e-5), (0.3, 1e-3)])
def test_batchnorm_tracks_nn_batchnorm1d_over_training_steps_then_eval(shape, momentum, eps):
    module = torch.nn.BatchNorm1d(shape[1], momentum=momentum, eps=eps).double()
    gamma, beta = _affine(shape[1])
    with torch.no_grad():
        module.weight.copy_(gamma)
        module.bias.copy_(beta)
    running_mean, running_var = module.running_mean.clone(), module.running_var.clone()
    g = torch.Generator().manual_seed(2)
    for step in range(4):
        x = 2 * torch.randn(*shape, generator=g, dtype=D) + step
        out, running_mean, running_var = norm.batchnorm(x, gamma, beta, running_mean, running_var,
                                                        training=True, momentum=momentum, eps=eps)
        torch.testing.assert_close(out, module(x).detach())
        torch.testing.assert_close(running_mean, module.running_mean)
        torch.testing.assert_close(running_var, module.running_var)
    module.eval()
    x = torch.randn(*shape, generator=g, dtype=D)
    out, mean_after, var_after = norm.batchnorm(x, gamma, beta, running_mean, running_var, training=False, eps=eps)
    torch.testing.assert_close(out, module(x).detach())
    assert torch.equal(mean_after, running_mean) and torch.equal(var_after, running_var)


@pytest.mark.parametrize("name", list(ROWS))
def test_batchnorm_extreme_inputs_match_f_batch_norm(name):
    x = ROWS[name].T.contiguous()                      # (5, 6): the "rows" become channels over a batch of 5
    x[:, 2] = -7.0                                     # a channel with variance 0: out = beta, no NaN
    gamma, beta = _affine(6)
    rm, rv = torch.zeros(6, dtype=D), torch.ones(6, dtype=D)
    out, new_rm, new_rv = norm.batchnorm(x, gamma, beta, rm, rv)
    want_rm, want_rv = rm.clone(), rv.clone()
    want = F.batch_norm(x, want_rm, want_rv, gamma, beta, training=True)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close((new_rm, new_rv), (want_rm, want_rv))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 2], beta[2].expand(5))


def test_batchnorm_is_pure():
    x, (gamma, beta) = ROWS["ordinary"], _affine(5)
    rm, rv = torch.zeros(5, dtype=D), torch.ones(5, dtype=D)
    copies = [t.clone() for t in (x, gamma, beta, rm, rv)]
    norm.batchnorm(x, gamma, beta, rm, rv, training=True)
    for before, after in zip(copies, (x, gamma, beta, rm, rv)):
        assert torch.equal(before, after)


def test_batchnorm_normalises_with_biased_and_tracks_unbiased_variance():
    x = torch.tensor([[1.0], [3.0]], dtype=D)          # mean 2, biased var 1, unbiased var 2
    out, rm, rv = norm.batchnorm(x, torch.ones(1, dtype=D), torch.zeros(1, dtype=D), torch.zeros(1, dtype=D),
                                 torch.ones(1, dtype=D), momentum=0.5, eps=0.0)
    torch.testing.assert_close(out, torch.tensor([[-1.0], [1.0]], dtype=D))
    torch.testing.assert_close((rm, rv), (torch.tensor([1.0], dtype=D), torch.tensor([1.5], dtype=D)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batchnorm_low_precision_inputs_are_computed_in_fp32(dtype):
    x = (3 * ROWS["ordinary"]).to(dtype)
    gamma, beta = (p.float() for p in _affine(5))
    out, rm, rv = norm.batchnorm(x, gamma, beta, torch.zeros(5), torch.ones(5))
    assert out.dtype == rm.dtype == rv.dtype == torch.float32
    want_rm, want_rv = torch.zeros(5, dtype=D), torch.ones(5, dtype=D)
    want = F.batch_norm(x.double(), want_rm, want_rv, gamma.double(), beta.double(), training=True)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rv.double(), want_rv, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ layernorm and its backward

@pytest.mark.parametrize("name", list(ROWS))
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_layernorm_matches_f_layer_norm(name, eps):
    x = ROWS[name]
    gamma, beta = _affine(5)
    got = norm.layernorm(x, gamma, beta, eps=eps)
    torch.testing.assert_close(got, F.layer_norm(x, (5,), gamma, beta, eps))
    assert torch.isfinite(got).all()


def test_layernorm_matches_nn_layernorm_on_sequences():
    module = torch.nn.LayerNorm(7).double()
    gamma, beta = _affine(7)
    with torch.no_grad():
        module.weight.copy_(gamma)
        module.bias.copy_(beta)
    x = torch.randn(2, 3, 7, dtype=D)
    torch.testing.assert_close(norm.layernorm(x, gamma, beta), module(x).detach())
    torch.testing.assert_close(norm.layernorm(x[0, 0], gamma, beta), module(x[0, 0]).detach())


def _autograd_layernorm(dy, x, gamma, eps):
    x, gamma = x.clone().requires_grad_(), gamma.clone().requires_grad_()
    beta = torch.zeros_like(gamma).requires_grad_()
    F.layer_norm(x, (x.shape[-1],), gamma, beta, eps).backward(dy)
    return x.grad, gamma.grad, beta.grad


@pytest.mark.parametrize("name", list(ROWS))
def test_layernorm_backward_matches_autograd(name):
    x = ROWS[name]
    gamma, _ = _affine(5)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=D)
    got = norm.layernorm_backward(dy, x, gamma)
    want = _autograd_layernorm(dy, x, gamma, 1e-5)
    torch.testing.assert_close(got[0], want[0], rtol=1e-7, atol=1e-9 * (1 + want[0].abs().max().item()))
    torch.testing.assert_close(got[1:], want[1:])


def test_layernorm_backward_sums_gamma_and_beta_grads_over_every_leading_axis():
    x = torch.randn(2, 3, 4, dtype=D)
    dy = torch.randn(2, 3, 4, dtype=D)
    gamma, _ = _affine(4)
    got = norm.layernorm_backward(dy, x, gamma, eps=1e-3)
    torch.testing.assert_close(got, _autograd_layernorm(dy, x, gamma, 1e-3))
    assert got[1].shape == got[2].shape == (4,)
    one_token = norm.layernorm_backward(dy[0, 0], x[0, 0], gamma, eps=1e-3)   # no leading axis: nothing to sum
    torch.testing.assert_close(one_token, _autograd_layernorm(dy[0, 0], x[0, 0], gamma, 1e-3))


class _HandLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta):
        ctx.save_for_backward(x, gamma)
        return norm.layernorm(x, gamma, beta)

    @staticmethod
    def backward(ctx, dy):
        return norm.layernorm_backward(dy, *ctx.saved_tensors)


def test_layernorm_backward_passes_gradcheck():
    x = torch.randn(3, 4, dtype=D, requires_grad=True)
    gamma, beta = (p.requires_grad_() for p in _affine(4))
    assert torch.autograd.gradcheck(_HandLayerNorm.apply, (x, gamma, beta))


# ------------------------------------------------------------------ rmsnorm

@pytest.mark.parametrize("name", list(ROWS))
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_rmsnorm_matches_f_rms_norm(name, eps):
    x = ROWS[name]
    gamma, _ = _affine(5)
    got = norm.rmsnorm(x, gamma, eps=eps)
    torch.testing.assert_close(got, F.rms_norm(x, (5,), gamma, eps))


def test_rmsnorm_matches_nn_rmsnorm_and_zero_rows_give_zero():
    module = torch.nn.RMSNorm(5, eps=1e-6).double()
    x = ROWS["ordinary"].clone()
    x[0] = 0.0
    gamma, _ = _affine(5)
    with torch.no_grad():
        module.weight.copy_(gamma)
    got = norm.rmsnorm(x, gamma)
    torch.testing.assert_close(got, module(x).detach())
    assert torch.equal(got[0], torch.zeros(5, dtype=D))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layer_and_rms_norm_low_precision_inputs_are_computed_in_fp32(dtype):
    x = (3 * ROWS["ordinary"]).to(dtype)
    gamma, beta = (p.to(dtype) for p in _affine(5))
    for got, want in [(norm.layernorm(x, gamma, beta), F.layer_norm(x.double(), (5,), gamma.double(), beta.double())),
                      (norm.rmsnorm(x, gamma), F.rms_norm(x.double(), (5,), gamma.double(), 1e-6))]:
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    dx, dgamma, dbeta = norm.layernorm_backward(x, x, gamma)
    assert dx.dtype == dgamma.dtype == dbeta.dtype == torch.float32


@pytest.mark.parametrize("shape", [(0, 5), (2, 0, 5)])
def test_layer_and_rms_norm_of_no_tokens_are_empty_as_torch(shape):
    x = torch.randn(shape, dtype=D)
    gamma, beta = _affine(5)
    for got, want in [(norm.layernorm(x, gamma, beta), F.layer_norm(x, (5,), gamma, beta)),
                      (norm.rmsnorm(x, gamma), F.rms_norm(x, (5,), gamma, 1e-6))]:
        assert got.shape == want.shape == shape


# ------------------------------------------------------------------ residual blocks

def test_residual_block_placements():
    x = torch.randn(4, 5, dtype=D)
    gamma, beta = _affine(5)
    w = torch.randn(5, 5, dtype=D)

    def sublayer(h):
        return torch.tanh(h @ w)

    def ln(h):
        return F.layer_norm(h, (5,), gamma, beta)

    torch.testing.assert_close(norm.residual_block(x, sublayer, ln, "pre"), x + sublayer(ln(x)))
    torch.testing.assert_close(norm.residual_block(x, sublayer, ln, "post"), ln(x + sublayer(x)))


# ------------------------------------------------------------------ bad inputs

X, ONES = torch.randn(4, 3), torch.ones(3)


@pytest.mark.parametrize("call, message", [
    (lambda: norm.batchnorm(torch.randn(4), ONES, ONES, ONES, ONES), r"\(N, C\) or \(N, C, L\).*\(4,\)"),
    (lambda: norm.batchnorm(X, torch.ones(4), ONES, ONES, ONES), r"gamma must have shape \(3,\).*\(4,\)"),
    (lambda: norm.batchnorm(X, ONES, ONES, ONES, torch.ones(2)), r"running_var must have shape \(3,\)"),
    (lambda: norm.batchnorm(torch.randn(1, 3), ONES, ONES, ONES, ONES), "more than one value per channel"),
    (lambda: norm.batchnorm(X.long(), ONES, ONES, ONES, ONES), "floating tensor"),
    (lambda: norm.layernorm(X, torch.ones(4), ONES), r"gamma must have shape \(3,\)"),
    (lambda: norm.layernorm_backward(torch.randn(4, 2), X, ONES), r"grad_out must have the shape of x"),
    (lambda: norm.rmsnorm(X, torch.ones(3, 1)), r"gamma must have shape \(3,\).*\(3, 1\)"),
    (lambda: norm.rmsnorm([1.0, 2.0], ONES), "must be a torch.Tensor"),
    (lambda: norm.residual_block(X, torch.tanh, torch.tanh, "middle"), r"placement must be one of \('pre', 'post'\)"),
])
def test_bad_inputs_raise_value_errors_that_name_the_expectation(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_batchnorm_in_eval_accepts_a_single_example():
    out, rm, rv = norm.batchnorm(torch.randn(1, 3), ONES, ONES, torch.zeros(3), torch.ones(3), training=False)
    assert out.shape == (1, 3) and torch.equal(rm, torch.zeros(3))
    gamma, beta = _affine(3)
    running_mean, running_var = torch.tensor([0.5, -1.0, 2.0], dtype=D), torch.tensor([0.25, 1.0, 4.0], dtype=D)
    for x in (torch.randn(1, 3, dtype=D), torch.randn(1, 3, 1, dtype=D)):
        want = F.batch_norm(x, running_mean, running_var, gamma, beta, training=False)
        torch.testing.assert_close(norm.batchnorm(x, gamma, beta, running_mean, running_var, training=False)[0], want)
