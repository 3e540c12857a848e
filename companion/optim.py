r"""Optimizers written from their update formulas, for reading (use ``torch.optim`` to train).

Each class is a ``torch.optim.Optimizer`` whose ``step`` is the textbook
update for one parameter tensor ``w`` with gradient ``g`` at step ``t``:

==============  ==========================================================
``GD``          :math:`w \leftarrow w - \eta g`
``Momentum``    :math:`v \leftarrow \mu v + g`, :math:`w \leftarrow w - \eta v`
                (Nesterov: :math:`w \leftarrow w - \eta (g + \mu v)`)
``RMSprop``     :math:`s \leftarrow \rho s + (1-\rho) g^2`,
                :math:`w \leftarrow w - \eta g / (\sqrt{s} + \epsilon)`
``Adam``        :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`,
                :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
                :math:`w \leftarrow w - \eta \hat m / (\sqrt{\hat v} + \epsilon)`
``AdamW``       Adam on the loss alone, then :math:`w \leftarrow w - \eta \lambda w`
                (decoupled weight decay)
==============  ==========================================================

They follow the same conventions as ``torch.optim`` (the first momentum
buffer is the gradient itself; Adam's L2 ``weight_decay`` is added to the
gradient), so they agree with it to float rounding; ``tests/test_optim.py``
checks 100 steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from ._checks import check_bool, check_float, check_int

__all__ = ["GD", "Momentum", "RMSprop", "Adam", "AdamW", "trajectory"]

Params = Iterable[torch.Tensor] | Iterable[dict]


class _Formula(torch.optim.Optimizer):
    """Shared loop: call :meth:`update` on every parameter that has a gradient."""

    def __init__(self, params: Params, lr: float, **defaults: float) -> None:
        check_float(lr, "lr", min_value=0.0)
        super().__init__(params, {"lr": lr, **defaults})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is not None:
                    self.update(w, w.grad, self.state[w], group)
        return loss

    def update(self, w: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError


class GD(_Formula):
    """Plain (stochastic) gradient descent: ``w -= lr * g``."""

    def update(self, w, g, state, group):
        w.sub_(group["lr"] * g)


class Momentum(_Formula):
    """SGD with heavy-ball or Nesterov momentum: ``v = mu*v + g``; ``w -= lr*v``."""

    def __init__(self, params: Params, lr: float, momentum: float = 0.9,
                 nesterov: bool = False) -> None:
        check_float(momentum, "momentum", min_value=0.0, max_value=1.0, max_inclusive=False)
        check_bool(nesterov, "nesterov")
        super().__init__(params, lr, momentum=momentum, nesterov=nesterov)

    def update(self, w, g, state, group):
        mu = group["momentum"]
        v = state.get("v")
        v = g.clone() if v is None else mu * v + g
        state["v"] = v
        direction = g + mu * v if group["nesterov"] else v
        w.sub_(group["lr"] * direction)


class RMSprop(_Formula):
    """RMSprop: divide the step by a running root-mean-square of the gradient."""

    def __init__(self, params: Params, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8) -> None:
        check_float(alpha, "alpha", min_value=0.0, max_value=1.0, max_inclusive=False)
        check_float(eps, "eps", min_value=0.0)
        super().__init__(params, lr, alpha=alpha, eps=eps)

    def update(self, w, g, state, group):
        rho = group["alpha"]
        s = rho * state.get("s", torch.zeros_like(w)) + (1 - rho) * g * g
        state["s"] = s
        w.sub_(group["lr"] * g / (s.sqrt() + group["eps"]))


class Adam(_Formula):
    """Adam (Kingma and Ba 2015); ``weight_decay`` is an L2 term added to the gradient."""

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if not isinstance(betas, (tuple, list)):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {type(betas).__name__}")
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {len(betas)} values")
        for i, b in enumerate(betas):
            check_float(b, f"betas[{i}]", min_value=0.0, max_value=1.0, max_inclusive=False)
        check_float(eps, "eps", min_value=0.0)
        check_float(weight_decay, "weight_decay", min_value=0.0)
        super().__init__(params, lr, beta1=betas[0], beta2=betas[1], eps=eps,
                         weight_decay=weight_decay)

    def _adam_step(self, w, g, state, group):
        b1, b2 = group["beta1"], group["beta2"]
        t = state["t"] = state.get("t", 0) + 1
        m = state["m"] = b1 * state.get("m", torch.zeros_like(w)) + (1 - b1) * g
        v = state["v"] = b2 * state.get("v", torch.zeros_like(w)) + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        w.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))

    def update(self, w, g, state, group):
        self._adam_step(w, g + group["weight_decay"] * w, state, group)


class AdamW(Adam):
    """AdamW (Loshchilov and Hutter 2019): weight decay applied to ``w``, outside Adam's scaling."""

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)

    def update(self, w, g, state, group):
        w.mul_(1 - group["lr"] * group["weight_decay"])
        self._adam_step(w, g, state, group)


def trajectory(loss_fn: Callable[[torch.Tensor], torch.Tensor], start: tuple[float, float],
               make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
               steps: int = 100) -> np.ndarray:
    """Points visited by an optimizer minimizing a 2-D function ``loss_fn(xy)``.

    Args:
        loss_fn: maps a tensor of shape ``(2,)`` to a scalar.
        start: starting point.
        make_optimizer: ``make_optimizer([xy])`` returns the optimizer to use.
        steps: number of updates.

    Returns:
        An array of shape ``(steps + 1, 2)``: the start and every point after it.
    """
    steps = check_int(steps, "steps", min_value=1)
    for fn, name in ((loss_fn, "loss_fn"), (make_optimizer, "make_optimizer")):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    xy = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    if xy.shape != (2,):
        raise ValueError(f"start must be a pair of numbers, got {start!r}")
    opt = make_optimizer([xy])
    points = [xy.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(xy).backward()
        opt.step()
        points.append(xy.detach().clone())
    return torch.stack(points).numpy()
