"""Top-level entry points: build a Network from a .znn file (and optional .h5 weights)."""
from __future__ import annotations

from pathlib import Path

from znn.formats.network_file import read_network
from znn.net.graph import Network


def load_network(znn_path, weights=None, *, output_size, dtype=None, conv_mode="fft",
                 num_threads=0, seed=None, phase="test", strict=True):
    """Build the network of a .znn file for one output patch size.

    Parameters
    ----------
    znn_path : path of the .znn network file.
    weights : optional .h5 saved by znn or by the original ZNN (layers matched by name).
    output_size : (z, y, x) of every output node (an int n means (1, n, n)).
    dtype : "float32" or "float64"; default: float32 (float64 when built with ZNN_USE_FLOATS=0).
    conv_mode : "fft", "direct", "file" (the per-layer `fft` flags), "optimize" (the faster
        mode of each layer within half the available memory, from the plan saved next to the
        network by `znn optimize-conv`, timed and saved now when there is none; see
        znn.net.conv_plan) or a dict {conv layer: "fft" | "direct"}.
    num_threads : worker threads; 0 or less means every core.
    seed : seed of the weight initialisation and dropout masks (reproducible runs).
    phase : "test" (dropout off) or "train".
    strict : with `weights`, every parameter layer must be in the file.

    Returns
    -------
    Network with .forward(), .backward(), .parameters(), .gradients(), .fov, .input_size,
    .output_size and .save().
    """
    spec = read_network(Path(znn_path))
    mode = conv_mode
    net = Network(spec, output_size, dtype=dtype, conv_mode="fft" if mode == "optimize" else mode,
                  num_threads=num_threads, seed=seed, phase=phase)
    if weights is not None:
        net.load_weights(weights, strict=strict)
    if mode == "optimize":  # the saved plan <znn_path>.plan, made (timed) when missing
        import logging

        from znn.net.conv_plan import default_budget, plan_network
        plan_network(net, znn_path, training=phase == "train", budget=default_budget(),
                     log=logging.getLogger("znn").info)
    return net
