"""One module per client protocol: each a thin translation into the relay core."""
