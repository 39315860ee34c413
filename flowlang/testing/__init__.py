"""Testing flows: test files, runs of their cases, and coverage (edges, conditions)."""
