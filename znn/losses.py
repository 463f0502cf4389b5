"""Cost functions of the training loop: (props, labels, mask) -> (props, error, gradient)."""
from __future__ import annotations

import numpy as np

__all__ = ["LOSSES", "binomial_cross_entropy", "check_output_function", "get_loss",
           "pixel_error", "softmax", "softmax_loss", "square_loss", "square_square_loss"]


def _prepare(props, labels, mask):
    props = np.asarray(props)
    labels = np.asarray(labels)
    if labels.shape != props.shape:
        raise ValueError(f"labels shape {labels.shape} differs from props shape {props.shape}")
    if mask is None:
        return props, labels, None
    mask = np.broadcast_to(np.asarray(mask), props.shape)
    return props, labels, mask


def square_loss(props, labels, mask=None):
    """Square error: d = (p - l)·mask; err = Σ d²; grad = 2d; props returned as p·mask."""
    props, labels, mask = _prepare(props, labels, mask)
    d = props - labels
    if mask is not None:
        d = d * mask
        props = props * mask
    return props, float(np.sum(np.square(d, dtype=np.float64))), (2 * d).astype(props.dtype)


def square_square_loss(props, labels, mask=None):
    """Square error ignoring small deviations: d = (p - l)·mask; d[|d| <= 0.2] = 0."""
    props, labels, mask = _prepare(props, labels, mask)
    d = props - labels
    if mask is not None:
        d = d * mask
        props = props * mask
    d = np.where(np.abs(d) <= 0.2, 0, d).astype(props.dtype)
    return props, float(np.sum(np.square(d, dtype=np.float64))), 2 * d


def binomial_cross_entropy(props, labels, mask=None):
    """Cross-entropy of sigmoid outputs p (the net's `forward_logistics` output).

    err = Σ mask·[-l log p - (1-l) log(1-p)] with p clipped to [eps, 1-eps] (eps the
    dtype's machine epsilon) so that saturated outputs give a finite error; grad = (p - l)
    · mask, the derivative with respect to the pre-sigmoid value (forward_logistics passes
    it through unchanged).  props are returned unchanged.
    """
    props, labels, mask = _prepare(props, labels, mask)
    eps = np.finfo(props.dtype).eps if props.dtype.kind == "f" else np.finfo(float).eps
    p = np.clip(props.astype(np.float64), eps, 1 - eps)
    lab = labels.astype(np.float64)
    e = -lab * np.log(p) - (1 - lab) * np.log1p(-p)
    grad = props - labels
    if mask is not None:
        e = e * mask
        grad = grad * mask
    return props, float(np.sum(e)), grad.astype(props.dtype)


def softmax(z, axis=0):
    """Softmax over `axis` with the maximum subtracted first."""
    z = np.asarray(z)
    ez = np.exp(z - z.max(axis=axis, keepdims=True))
    return ez / ez.sum(axis=axis, keepdims=True)


def softmax_loss(props, labels, mask=None):
    """Softmax over the channel axis of the linear outputs, then cross-entropy.

    Returns (softmax p, Σ mask·(-l log p) over every channel, (p - l)·mask); log p is
    computed as a log-softmax in float64, so it is finite for any input.
    """
    props, labels, mask = _prepare(props, labels, mask)
    z = props.astype(np.float64)
    shifted = z - z.max(axis=0, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=0, keepdims=True))
    p = np.exp(logp)
    e = -labels * logp
    grad = p - labels
    if mask is not None:
        e = e * mask
        grad = grad * mask
    return p.astype(props.dtype), float(np.sum(e)), grad.astype(props.dtype)


def pixel_error(props, labels, mask=None) -> int:
    """Number of elements with (p > 0.5) != (l > 0.5), over all channels.

    Only elements with mask > 0 count (the original ignored the mask, §8.13).
    """
    props, labels, mask = _prepare(props, labels, mask)
    wrong = (props > 0.5) != (labels > 0.5)
    if mask is not None:
        wrong &= mask > 0
    return int(np.count_nonzero(wrong))


LOSSES = {"square_loss": square_loss, "square_square_loss": square_square_loss,
          "binomial_cross_entropy": binomial_cross_entropy, "softmax_loss": softmax_loss}


def get_loss(name: str):
    """The loss function named `name` (one of LOSSES)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown cost function '{name}' (use one of "
                         f"{', '.join(LOSSES)})") from None


_NEEDS = {"binomial_cross_entropy": "forward_logistics", "softmax_loss": "linear"}


def check_output_function(cost_name: str, function_name: str | None) -> str | None:
    """An error message when the output nodes' transfer function does not fit the cost.

    binomial_cross_entropy needs `forward_logistics` (sigmoid forward, identity derivative,
    so the gradient p - l is right); softmax_loss needs `linear` (the softmax is applied
    by the cost); square losses accept any function.  None (no transfer function) counts
    as linear.  Returns None when they fit.
    """
    get_loss(cost_name)
    need = _NEEDS.get(cost_name)
    have = function_name or "linear"
    if need is None or have == need:
        return None
    hint = " (logistics would multiply the gradient by p(1-p) a second time)" \
        if have == "logistics" and need == "forward_logistics" else ""
    return (f"cost function {cost_name} needs the output nodes' transfer function to be "
            f"'{need}', not '{have}'{hint}")
