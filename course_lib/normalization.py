"""Normalisation layers by hand: BatchNorm, LayerNorm (and its backward), RMSNorm, residual blocks (notebook 05).

Every layer standardises activations and then applies a learned affine map, x_hat * gamma + beta.
They differ in the axis the statistics are taken over:
    BatchNorm: per channel c, over the batch (and length) axes:  mean_c, var_c of x[:, c, ...]
    LayerNorm: per token, over the last (feature) axis:           mean, var of x[..., :]
    RMSNorm:   per token, no centring:                            x / sqrt(mean(x^2) + eps) * gamma
The variance used to normalise is the biased one (divide by n) and eps sits inside the square root.
"""
import torch

from ._inputs import as_float

PLACEMENTS = ("pre", "post")


def _check_affine(fn, size, **params):
    for name, p in params.items():
        if tuple(p.shape) != (size,):
            raise ValueError(f"{fn}: {name} must have shape ({size},) to match the normalised axis, "
                             f"got {tuple(p.shape)}")


def batchnorm(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    """BatchNorm1d as a pure function: returns (out, new_running_mean, new_running_var).

    x: (N, C) or (N, C, L); gamma, beta, running_mean, running_var: (C,).
    training: mean_c and the biased var_c over every axis but C (n = N or N * L values) give
        out = (x - mean_c) / sqrt(var_c + eps) * gamma_c + beta_c, and the running averages become
        (1 - momentum) * running + momentum * batch_stat, with the *unbiased* var_c * n / (n - 1).
    eval: out uses running_mean / running_var, which are returned unchanged.
    Nothing is modified in place.
    """
    fn = "batchnorm"
    x = as_float("x", x, fn)
    if x.dim() not in (2, 3):
        raise ValueError(f"{fn}: expected x of shape (N, C) or (N, C, L), got {tuple(x.shape)}")
    params = {name: as_float(name, p, fn) for name, p in
              dict(gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var).items()}
    _check_affine(fn, x.shape[1], **params)
    gamma, beta, running_mean, running_var = params.values()
    axes = [0] + list(range(2, x.dim()))
    per_channel = (-1,) + (1,) * (x.dim() - 2)       # broadcast a (C,) vector against x
    if training:
        n = x.numel() // x.shape[1]
        if n < 2:
            raise ValueError(f"{fn}: training needs more than one value per channel, got x of shape "
                             f"{tuple(x.shape)} (the batch variance would be 0)")
        mean = x.mean(dim=axes)
        var = ((x - mean.reshape(per_channel)) ** 2).mean(dim=axes)
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    else:
        mean, var = running_mean, running_var
    x_hat = (x - mean.reshape(per_channel)) / torch.sqrt(var.reshape(per_channel) + eps)
    return x_hat * gamma.reshape(per_channel) + beta.reshape(per_channel), running_mean, running_var


def _standardise(x, eps):
    mean = x.mean(dim=-1, keepdim=True)
    rstd = 1 / torch.sqrt(((x - mean) ** 2).mean(dim=-1, keepdim=True) + eps)
    return (x - mean) * rstd, rstd


def layernorm(x, gamma, beta, eps=1e-5):
    """LayerNorm over the last axis, as F.layer_norm(x, (D,), gamma, beta, eps).

    x_hat = (x - mean) / sqrt(var + eps), mean and biased var over the last axis; out = x_hat * gamma + beta.
    x: (..., D); gamma, beta: (D,). Returns (..., D).
    """
    fn = "layernorm"
    x, gamma, beta = as_float("x", x, fn), as_float("gamma", gamma, fn), as_float("beta", beta, fn)
    _check_affine(fn, x.shape[-1] if x.dim() else 0, gamma=gamma, beta=beta)
    return _standardise(x, eps)[0] * gamma + beta


def layernorm_backward(grad_out, x, gamma, eps=1e-5):
    """Gradients of layernorm(x, gamma, beta, eps) given dL/d out = grad_out, without autograd.

    With x_hat and 1 / sigma = 1 / sqrt(var + eps) as in the forward and g = gamma * grad_out:
        dx     = (g - mean(g) - x_hat * mean(g * x_hat)) / sigma     (means over the last axis)
        dgamma = sum over all leading axes of grad_out * x_hat
        dbeta  = sum over all leading axes of grad_out
    grad_out, x: (..., D); gamma: (D,). Returns (dx (..., D), dgamma (D,), dbeta (D,)).
    """
    fn = "layernorm_backward"
    dy, x, gamma = as_float("grad_out", grad_out, fn), as_float("x", x, fn), as_float("gamma", gamma, fn)
    if dy.shape != x.shape:
        raise ValueError(f"{fn}: grad_out must have the shape of x, got {tuple(dy.shape)} and {tuple(x.shape)}")
    _check_affine(fn, x.shape[-1] if x.dim() else 0, gamma=gamma)
    x_hat, rstd = _standardise(x, eps)
    g = dy * gamma
    dx = rstd * (g - g.mean(dim=-1, keepdim=True) - x_hat * (g * x_hat).mean(dim=-1, keepdim=True))
    D = x.shape[-1]                                   # sum over every leading axis (also when there is none)
    return dx, (dy * x_hat).reshape(-1, D).sum(0), dy.reshape(-1, D).sum(0)


def rmsnorm(x, gamma, eps=1e-6):
    """RMSNorm over the last axis, as F.rms_norm(x, (D,), gamma, eps): x / sqrt(mean(x^2) + eps) * gamma.

    No mean is subtracted and there is no beta. x: (..., D); gamma: (D,). Returns (..., D).
    """
    fn = "rmsnorm"
    x, gamma = as_float("x", x, fn), as_float("gamma", gamma, fn)
    _check_affine(fn, x.shape[-1] if x.dim() else 0, gamma=gamma)
    return x / torch.sqrt((x ** 2).mean(dim=-1, keepdim=True) + eps) * gamma


def residual_block(x, sublayer, norm, placement):
    """One residual block around ``sublayer`` (attention, an MLP, ...) with the normalisation ``norm``.

    placement "pre":  x + sublayer(norm(x))   (GPT-2, LLaMA: the residual stream is never normalised)
    placement "post": norm(x + sublayer(x))   (the original Transformer)
    x: (..., D); sublayer, norm: callables (..., D) -> (..., D).
    """
    if placement == "pre":
        return x + sublayer(norm(x))
    if placement == "post":
        return norm(x + sublayer(x))
    raise ValueError(f"residual_block: placement must be one of {PLACEMENTS}, got {placement!r}")
