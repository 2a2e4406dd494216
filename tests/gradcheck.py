"""The one finite-difference helper: central differences, float64, every parameter by name."""

import numpy as np

from medalpy.backprop import Pass


def check_gradients(backend, net, X, target, start_level=0, eps=1e-4):
    """Compare backprop gradients of a network's active path with central differences.

    Returns ``{param_name: error}`` for every trainable parameter, where error is
    ``max |a - f| / max |a|`` over its elements: the largest deviation of the analytic
    gradient ``a`` from the numeric ``f`` relative to the gradient's own scale (per-element
    ratios blow up on elements that are nearly zero).
    """
    chain = net.path(start_level)
    p = Pass(backend, chain, X.shape[0], net.head, np.float64)
    p.backward(X, target)
    analytic = {}
    for name, layer, dW, db in p.named_gradients():
        analytic[f"{name}.W"] = (layer.W, dW.copy())
        analytic[f"{name}.b"] = (layer.b, db.copy())
    errors = {}
    for pname, (param, grad) in analytic.items():
        numeric = np.empty_like(param)
        flat, nflat = param.reshape(-1), numeric.reshape(-1)
        for j in range(flat.size):
            saved = flat[j]
            flat[j] = saved + eps
            plus = p.backward(X, target)
            flat[j] = saved - eps
            minus = p.backward(X, target)
            flat[j] = saved
            nflat[j] = (plus - minus) / (2 * eps)
        scale = max(float(np.max(np.abs(grad))), 1e-12)
        errors[pname] = float(np.max(np.abs(grad - numeric))) / scale
    return errors
