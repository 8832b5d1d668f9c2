"""Evaluation metrics in the torchmetrics shape (module + functional twin)."""
