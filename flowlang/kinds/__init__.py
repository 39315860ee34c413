"""Step kinds: one module per kind (fields, edges, facts, checks, executor); see registry.py."""
