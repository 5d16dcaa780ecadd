"""Fault injectors shared by the fault tests and the soak run (``tools/soak.py``).

One module per kind of fault: ``service`` (tracking service down, slow, erroring, garbage),
``processes`` (kill -9 of a BLISS session or a deliverer), ``redis`` (beacon Redis restart),
``hardware`` (barcode readers and sample changers misbehaving).
"""
