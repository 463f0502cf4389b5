"""The same dense network in PyTorch (conv3d with dilation, max_pool3d stride 1): a reference."""
from __future__ import annotations

import torch
import torch.nn.functional as F

ACT = {
    "linear": lambda x, a: x * a[0] + a[1],
    "rectify_linear": lambda x, a: torch.relu(x),
    "tanh": lambda x, a: a[0] * torch.tanh(a[1] * x),
    "logistics": lambda x, a: torch.sigmoid(x),
    "forward_logistics": lambda x, a: torch.sigmoid(x),
    "soft_sign": lambda x, a: x / (1 + x.abs()),
}


class TorchDense(torch.nn.Module):
    """Evaluates a znn Network's graph with torch ops on (1, C, Z, Y, X) tensors."""

    def __init__(self, net, dtype=torch.float32):
        super().__init__()
        self.net = net
        self.weights = torch.nn.ParameterDict()
        for name, p in net.parameters().items():
            t = torch.tensor(p, dtype=dtype)
            if name in net.edges:  # znn (n_in, n_out, k) true conv -> torch (n_out, n_in, k)
                t = t.flip(2, 3, 4).transpose(0, 1).contiguous()
            self.weights[name.replace("-", "_")] = torch.nn.Parameter(t)

    def forward(self, inputs):
        net, values = self.net, {}
        for name in net.order:
            node = net.nodes[name]
            if node.type == "input":
                values[name] = inputs[name]
                continue
            parts = []
            for e in node.in_edges:
                x = values[e.src.name]
                if e.type == "conv":
                    parts.append(F.conv3d(x, self.weights[e.name.replace("-", "_")],
                                          dilation=e.dilation))
                elif e.type == "max_filter":
                    parts.append(F.max_pool3d(x, tuple(e.spec.size), stride=1,
                                              dilation=e.dilation))
                else:
                    parts.append(x)
            v = parts[0]
            for p in parts[1:]:
                v = torch.maximum(v, p) if node.type == "maxout" else v + p
            if node.type == "transfer":
                b = self.weights[name.replace("-", "_")].view(1, -1, 1, 1, 1)
                v = ACT[node.spec.function](v + b, (node.a, node.b))
            values[name] = v
        return {name: values[name] for name in net.outputs}


def train_step(net, *, lr=1e-6, momentum=0.9, seed=0):
    """One SGD-with-momentum step on random input patches of net's input size (a closure)."""
    torch.manual_seed(seed)
    model = TorchDense(net)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    x = {n: torch.randn((1,) + tuple(net.nodes[n].shape)) for n in net.inputs}

    def step():
        opt.zero_grad()
        sum(v.sum() for v in model(x).values()).backward()
        opt.step()
    return step


def dense_volume(net, padded):
    """Outputs {name: (C, Z, Y, X) numpy} of net over a mirrored (Z', Y', X') float32 volume.

    2D networks (FOV z = 1) run slice by slice; 3D networks on the whole padded volume at once.
    """
    import numpy as np

    model = TorchDense(net)
    flat = net.fov[0] == 1
    pieces = [padded[k:k + 1] for k in range(padded.shape[0])] if flat else [padded]
    outs = {}
    with torch.no_grad():
        for p in pieces:
            x = torch.from_numpy(np.ascontiguousarray(p))[None, None]
            for name, v in model({n: x for n in net.inputs}).items():
                outs.setdefault(name, []).append(v[0].numpy())
    return {k: np.concatenate(v, axis=1) for k, v in outs.items()}
