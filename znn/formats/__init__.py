"""File formats: .znn network descriptions and HDF5 network weight files."""
from znn.formats.network_file import EdgeSpec, NetworkSpec, NodeSpec, parse_network, read_network
from znn.formats.network_h5 import LayerWeights, read_extra, read_network_h5, write_network_h5

__all__ = [
    "parse_network", "read_network", "NetworkSpec", "NodeSpec", "EdgeSpec",
    "read_network_h5", "write_network_h5", "read_extra", "LayerWeights",
]
