"""Regularisation: L2 and L1 penalties, Adam with L2 vs AdamW, inverted dropout, label smoothing (notebook 04).

Penalties. The L2 penalty lambda * sum_i w_i^2 has gradient 2 lambda w, so one SGD step with rate eta
is w <- (1 - 2 eta lambda) w - eta grad L: a shrink, then the data step. torch's ``weight_decay``
argument is parametrised differently: SGD and Adam add ``wd * w`` to the gradient (the gradient of
wd/2 * sum w^2), and AdamW multiplies w by (1 - lr * wd) outside the adaptive step. The L1 penalty
lambda * sum |w| is handled by a proximal step, soft-thresholding, which sets small weights to exactly 0.

Adam (t counts from 1, g the gradient, m and v the running moments):
    m_t = b1 m + (1 - b1) g,   v_t = b2 v + (1 - b2) g^2,
    w  <- w - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps).
Adam + L2 (torch.optim.Adam(weight_decay=wd)) uses g + wd * w as the gradient, so the decay is
divided by sqrt(v) too; AdamW (torch.optim.AdamW) first multiplies w by (1 - lr * wd).
"""
import torch

from ._inputs import as_float, number, same_shape
from .cross_entropy import cross_entropy


def _nonnegative(fn, name, value, like):
    """A number >= 0, or a tensor of them that broadcasts against ``like`` (e.g. one lambda per row)."""
    if isinstance(value, torch.Tensor) and value.numel() > 1:
        value = as_float(name, value, fn)
        try:
            torch.broadcast_shapes(value.shape, like.shape)
        except RuntimeError:
            raise ValueError(f"{fn}: {name} of shape {tuple(value.shape)} must broadcast against "
                             f"w of shape {tuple(like.shape)}") from None
        if bool((value < 0).any()):
            raise ValueError(f"{fn}: {name} must be >= 0 everywhere")
        return value
    return number(fn, name, value, low=0.0)


def l2_penalty(w, weight_decay):
    """lambda * sum_i w_i^2 for a weight tensor w of any shape. Returns a 0-d tensor."""
    w = as_float("w", w, "l2_penalty")
    return number("l2_penalty", "weight_decay", weight_decay, low=0.0) * (w * w).sum()


def l2_penalty_grad(w, weight_decay):
    """d/dw of lambda * sum w^2 = 2 lambda w. w: any shape; returns w's shape."""
    w = as_float("w", w, "l2_penalty_grad")
    return 2 * number("l2_penalty_grad", "weight_decay", weight_decay, low=0.0) * w


def l1_proximal_step(w, grad, lr, l1):
    """One proximal-gradient (ISTA) step for L(w) + l1 * sum |w|.

    u = w - lr * grad, then soft-thresholding: sign(u) * max(|u| - lr * l1, 0), which is
    argmin_x 1/(2 lr) ||x - u||^2 + l1 ||x||_1. Entries with |u| <= lr * l1 become exactly 0.
    w, grad: same shape. lr, l1: numbers >= 0, or tensors broadcasting against w. Returns w's shape.
    """
    fn = "l1_proximal_step"
    w, grad = as_float("w", w, fn), as_float("grad", grad, fn)
    same_shape(fn, w=w, grad=grad)
    lr, l1 = _nonnegative(fn, "lr", lr, w), _nonnegative(fn, "l1", l1, w)
    u = w - lr * grad
    return torch.sign(u) * torch.clamp(u.abs() - lr * l1, min=0.0)


def _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, decoupled, fn):
    p, g = as_float("param", param, fn), as_float("grad", grad, fn)
    m, v = as_float("exp_avg", exp_avg, fn), as_float("exp_avg_sq", exp_avg_sq, fn)
    same_shape(fn, param=p, grad=g, exp_avg=m, exp_avg_sq=v)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"{fn}: step must be an int >= 1 (the number of this update, counting from 1), got {step!r}")
    b1, b2 = (number(fn, name, b, low=0.0, high=1.0) for name, b in zip(("betas[0]", "betas[1]"), betas))
    lr, eps = number(fn, "lr", lr, low=0.0), number(fn, "eps", eps, low=0.0)
    weight_decay = number(fn, "weight_decay", weight_decay, low=0.0)
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = m + (g - m) * (1 - b1)
    v = v * b2 + (1 - b2) * g * g
    denom = v.sqrt() / (1 - b2 ** step) ** 0.5 + eps
    return p - (lr / (1 - b1 ** step)) * m / denom, m, v


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    """One step of torch.optim.AdamW (decoupled weight decay), without modifying any input.

    w' = (1 - lr wd) w - lr * m_hat / (sqrt(v_hat) + eps), with m, v updated from grad first and
    m_hat = m / (1 - b1^step), v_hat = v / (1 - b2^step). step: int, 1 for the first update.
    param, grad, exp_avg, exp_avg_sq: same shape. Returns (new_param, new_exp_avg, new_exp_avg_sq).
    """
    return _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, True, "adamw_step")


def adam_l2_step(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    """One step of torch.optim.Adam(weight_decay=wd): L2 folded into the gradient, g <- g + wd * w.

    Same arguments and outputs as ``adamw_step``; the decay is then rescaled by 1 / (sqrt(v_hat) + eps).
    """
    return _adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, False, "adam_l2_step")


def dropout_forward(x, p, training=True, generator=None):
    """Inverted dropout: keep each entry with probability 1 - p and scale survivors by 1 / (1 - p).

    x: any shape. Returns (out, mask), mask a bool tensor shaped like x (True = kept) and
    out = x * mask / (1 - p), so E[out] = x. Eval mode (training=False) or p = 0: out = x and an
    all-True mask. p = 1: everything dropped, out = 0 (never 0/0). The mask keeps u >= p for
    u = torch.rand(x.shape, generator=generator).
    """
    fn = "dropout_forward"
    x = as_float("x", x, fn)
    p = number(fn, "p", p, low=0.0, high=1.0)
    if not training or p == 0.0:
        return x.clone(), torch.ones_like(x, dtype=torch.bool)
    mask = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return dropout_backward(x, mask, p), mask


def dropout_backward(grad_out, mask, p):
    """Gradient of inverted dropout with respect to its input: grad_out * mask / (1 - p).

    grad_out: any shape; mask: same shape, bool or 0/1 (the forward's mask). p = 1 gives zeros.
    """
    fn = "dropout_backward"
    grad_out = as_float("grad_out", grad_out, fn)
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{fn}: mask must be a torch.Tensor (the forward pass's mask), got {type(mask).__name__}")
    same_shape(fn, grad_out=grad_out, mask=mask)
    p = number(fn, "p", p, low=0.0, high=1.0)
    if p == 1.0:
        return torch.zeros_like(grad_out)
    return grad_out * mask.to(grad_out.dtype) / (1 - p)


def label_smoothed_cross_entropy(logits, targets, epsilon):
    """Mean over the batch of H(q, softmax(z)), q = (1 - eps) onehot(y) + eps / C.

    = (1 - eps) CE(onehot(y), p) + eps CE(u, p), with CE(u, p) = KL(u || p) + log C.
    Matches F.cross_entropy(logits, targets, label_smoothing=epsilon).
    logits: (N, C); targets: (N,) integer. Returns a 0-d tensor.
    """
    fn = "label_smoothed_cross_entropy"
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{fn}: expected logits (N, C), got {shape}")
    epsilon = number(fn, "epsilon", epsilon, low=0.0, high=1.0)
    return cross_entropy(logits, targets, label_smoothing=epsilon)
