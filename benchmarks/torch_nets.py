"""The same dense network in PyTorch (conv3d with dilation, max_pool3d with stride 1): a reference."""
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
            if name in net.edges:  # znn (n_in, n_out, k) true conv -> torch (n_out, n_in, k) flipped
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
