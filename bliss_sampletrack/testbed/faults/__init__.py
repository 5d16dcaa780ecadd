"""Fault injectors shared by the fault tests (``tests/test_faults_*.py``) and the soak run
(``tools/soak.py``, which repeats them at random for a given time and counts what got through).

One module per kind of fault: ``service`` (a faulty proxy in front of the tracking service: down,
slow, 5xx/4xx, garbage, reset), ``processes`` (kill -9 and restart of a command that prints a
ready line, such as the standalone deliverer ``sampletrack deliver``), ``session`` (a BLISS session
with the tracker in a child process, killed -9 at a random step, plus the history, outbox and scan
tag checks), ``redis`` (the beacon's Redis stopped and started again), ``hardware`` (barcode readers
and sample changers misbehaving).
"""
