"""Runtime: run compiled flows per call (scope, steps, HTTP, host, secrets, suspend and resume)."""
