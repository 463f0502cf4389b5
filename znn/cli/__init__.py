"""The `znn` command line (Click): one command per module."""
