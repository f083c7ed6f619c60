"""hpsearch's trainer: one trial from a configuration, Keras vocabulary on PyTorch Lightning."""
