"""Network graphs: geometry (shapes), node and edge types, and the Network itself."""
