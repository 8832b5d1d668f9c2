"""Preference-conditioned diffusion: the adapter, the pipeline (and, later, its training)."""
