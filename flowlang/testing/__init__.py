"""Flow tests: ``*.test.yaml`` files of cases for flows and workflows, run offline on virtual
time, with step and edge coverage (``flowlang test`` and the pytest plugin).

Stages, one module each: :mod:`~flowlang.testing.spec` reads a test file, :mod:`.patterns`
checks ``{matches: ...}`` patterns, :mod:`.offline` answers requests from the recordings
without sleeping, :mod:`.runner` runs a case, :mod:`.expect` compares what a case did with
what it expects, :mod:`.coverage` adds the runs up (:mod:`.conditions`: condition coverage),
:mod:`.report` writes failures as text, :mod:`.session` runs files, :mod:`.plugin` is pytest's.
Importing this package imports none of them (the pytest plugin imports it cheaply).
"""
