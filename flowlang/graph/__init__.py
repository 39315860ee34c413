"""Pictures and coverage of flows: the step graph with numbered edges (:mod:`.model`), which
edges a run took, and renderers that read it (Mermaid, DOT, the HTML viewer)."""
