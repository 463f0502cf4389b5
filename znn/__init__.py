"""znn: dense 2D/3D convolutional networks on multi-core CPUs (successor of Seung lab's ZNN)."""
from znn._version import __version__
from znn.errors import DataError, KernelError, NetworkError, SpecError, ZnnError


def load_network(*args, **kwargs):
    """Build a Network from a .znn file; see znn.api.load_network."""
    from znn.api import load_network as _load

    return _load(*args, **kwargs)


load_network.__doc__ = "Build a Network from a .znn file (and weights); see znn.api.load_network."

__all__ = ["DataError", "KernelError", "NetworkError", "SpecError", "ZnnError", "__version__",
           "load_network"]
