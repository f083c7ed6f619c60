"""Example hpsearch plugins: `resmlp` (a model) and `diabetes` (a regression dataset)."""
