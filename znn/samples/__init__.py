"""Paths of the bundled ISBI 2012 EM crop (8 x 256 x 256, see README.md beside this file)."""
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
IMAGE = FOLDER / "isbi2012_image.tif"
BOUNDARY = FOLDER / "isbi2012_boundary.tif"
SEGMENTS = FOLDER / "isbi2012_segments.tif"
