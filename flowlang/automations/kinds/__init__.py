"""Action kinds: one module per workflow action kind, listed in ``registry.py``."""
