"""Stochastic gradient descent with momentum and weight decay, as the original's core."""
from __future__ import annotations

import numpy as np

__all__ = ["SGD"]


class SGD:
    """The update of the original ZNN core (reference §3), applied in place.

    For every parameter W with gradient G = ∂E/∂W (summed over the output patch; for a
    bias, Σ g): V ← μV − (η/ps)·G − ηλW, then W ← W + V, where ps = Z·Y·X of the output
    size the network was built for.  With μ = 0 the equivalent W ← W(1 − ηλ) − (η/ps)G is
    used and V is left unchanged (as the original, whose momentum volumes stay 0 then).

    `net` needs `parameters()` and `gradients()` returning dicts name -> ndarray with the
    same keys; the parameter arrays are updated in place.
    """

    def __init__(self, net, output_size, eta: float = 0.01, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        self.net = net
        self.patch_size = int(np.prod(output_size))
        if self.patch_size < 1:
            raise ValueError(f"output_size must be positive, got {output_size}")
        self.eta, self.momentum, self.weight_decay = float(eta), float(momentum), \
            float(weight_decay)
        self.iteration = 0
        self.velocity = {name: np.zeros_like(w) for name, w in net.parameters().items()}

    def step(self) -> None:
        """Apply one update to every parameter from the network's current gradients."""
        params, grads = self.net.parameters(), self.net.gradients()
        if set(params) != set(grads):
            raise ValueError("parameters() and gradients() have different names: "
                             f"{sorted(set(params) ^ set(grads))}")
        scale = self.eta / self.patch_size
        decay = self.eta * self.weight_decay
        for name, w in params.items():
            g = grads[name]
            if g.shape != w.shape:
                raise ValueError(f"gradient of '{name}' has shape {g.shape}, parameter {w.shape}")
            if self.momentum == 0.0:
                w *= w.dtype.type(1.0 - decay)
                w -= (scale * g).astype(w.dtype, copy=False)
                continue
            v = self.velocity.setdefault(name, np.zeros_like(w))
            v *= v.dtype.type(self.momentum)
            v -= (scale * g + decay * w).astype(v.dtype, copy=False)
            w += v
        self.iteration += 1

    def anneal(self, iteration: int, every: int, factor: float) -> bool:
        """η ← η·factor when `iteration` is a multiple of `every` (> 0); True if it did."""
        if every > 0 and iteration % every == 0:
            self.eta *= factor
            return True
        return False

    def state_dict(self) -> dict:
        """Learning rate, iteration count and copies of the momentum volumes."""
        return {"eta": self.eta, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "iteration": self.iteration,
                "velocity": {k: v.copy() for k, v in self.velocity.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict` (missing entries keep their current values).

        The momentum volumes must match the parameters' names and shapes.
        """
        params = self.net.parameters()
        for name, v in state.get("velocity", {}).items():
            if name not in params:
                raise ValueError(f"momentum volume '{name}' has no matching parameter")
            if np.shape(v) != params[name].shape:
                raise ValueError(f"momentum volume '{name}' has shape {np.shape(v)}, the "
                                 f"parameter {params[name].shape}")
            self.velocity[name] = np.array(v, dtype=params[name].dtype)
        for key in ("eta", "momentum", "weight_decay"):
            if key in state:
                setattr(self, key, float(state[key]))
        if "iteration" in state:
            self.iteration = int(state["iteration"])
