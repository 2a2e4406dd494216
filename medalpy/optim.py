"""Stochastic gradient descent with momentum, weight decay and MEDAL's gradient normalisation.

For each trainable layer with gradient ``g = [dW; db]``:

    s = 1 / ||g||  if normalise_gradients (MEDAL's normGrad) else 1
    V_W = momentum V_W + lr (s dW + weight_decay W),   W = W - V_W
    V_b = momentum V_b + lr (s db),                   b = b - V_b     (biases are not decayed)

Velocities are keyed by parameter name (``encoder.0.W``...), start at zero, and live in
:attr:`SGD.velocity` so that checkpoints can save and restore them.

``lr_scale`` multiplies the learning rate of named layers (``{"encoder.0": 0.5}``): a lower
layer's multiplier m(t) in a gradual phase (:class:`medalpy.schedules.LowerLR`). A layer
updated at a reduced rate still takes its update step: momentum and weight decay act on it
as on any other.
"""

import math
from dataclasses import dataclass, field


@dataclass
class SGD:
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    normalise_gradients: bool = False
    velocity: dict = field(default_factory=dict)
    lr_scale: dict = field(default_factory=dict)

    def layer_lr(self, name):
        """The learning rate of layer ``name`` (``lr`` times its ``lr_scale``, if any)."""
        return self.lr * self.lr_scale[name] if name in self.lr_scale else self.lr

    def velocity_of(self, backend, name, like):
        """The velocity of parameter ``name`` (zeros of ``like``'s shape at first use)."""
        v = self.velocity.get(name)
        if v is None:
            v = self.velocity[name] = backend.zeros(like.shape, like.dtype)
        elif v.shape != like.shape or v.dtype != like.dtype:
            # The kernels trust shapes: a mismatch would write past the end of V.
            raise ValueError(
                f"velocity {name!r} is {v.shape} {v.dtype} but the parameter is {like.shape} "
                f"{like.dtype}: do two layers share the name {name.rsplit('.', 1)[0]!r}?")
        return v

    def update(self, backend, train_pass):
        """Update the trainable layers of a :class:`medalpy.backprop.Pass` after its backward
        (with the gradient norms the pass computes cheaply, when normalising)."""
        norms = train_pass.gradient_sq_norms() if self.normalise_gradients else None
        self.step(backend, train_pass.named_gradients(), norms)

    def step(self, backend, named_gradients, sq_norms=None):
        """Update every (name, layer, dW, db) in place.

        ``sq_norms``: optional ``||dW||^2 + ||db||^2`` per entry, already known (see
        :meth:`medalpy.backprop.Pass.gradient_sq_norms`); computed from the arrays otherwise.
        """
        for j, (name, layer, dW, db) in enumerate(named_gradients):
            self.apply(backend, name, layer, dW, db, None if sq_norms is None else sq_norms[j])

    def _scale(self, sq_norm):
        """MEDAL's normGrad factor ``1 / ||[dW; db]||`` (1 without normGrad or for a zero
        gradient)."""
        if not self.normalise_gradients:
            return 1.0
        norm = math.sqrt(sq_norm)
        return 1.0 / norm if norm > 0.0 else 1.0

    def apply(self, backend, name, layer, dW, db, sq_norm=None):
        """Update one layer in place from its gradient ``(dW, db)``.

        ``sq_norm``: ``||dW||^2 + ||db||^2`` when already known (normGrad only); computed from
        the arrays otherwise. :meth:`medalpy.backprop.Pass.train_step` calls this once per
        layer, as soon as the layer's gradient is final.
        """
        if self.normalise_gradients and sq_norm is None:
            sq_norm = backend.sum_of_squares(dW) + backend.sum_of_squares(db)
        scale, lr = self._scale(sq_norm), self.layer_lr(name)
        backend.sgd_update(layer.W, dW, self.velocity_of(backend, f"{name}.W", layer.W),
                           lr, self.momentum, self.weight_decay, scale)
        backend.sgd_update(layer.b, db, self.velocity_of(backend, f"{name}.b", layer.b),
                           lr, self.momentum, 0.0, scale)

    def apply_product(self, backend, name, layer, A, delta, db, sq_norm):
        """:meth:`apply` with ``dW = A.T @ delta`` left for the backend to form as it updates
        (``sgd_update_product``: never stored whole on the cpu backend).

        ``sq_norm`` must be given when normalising (the norm cannot come from ``dW``).
        """
        scale, lr = self._scale(sq_norm), self.layer_lr(name)
        backend.sgd_update_product(A, delta, layer.W,
                                   self.velocity_of(backend, f"{name}.W", layer.W), lr,
                                   self.momentum, self.weight_decay, scale)
        backend.sgd_update(layer.b, db, self.velocity_of(backend, f"{name}.b", layer.b),
                           lr, self.momentum, 0.0, scale)
