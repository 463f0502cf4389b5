"""znn: dense 2D/3D convolutional networks on multi-core CPUs."""
from znn._version import __version__

