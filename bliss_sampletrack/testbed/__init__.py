"""The test bed: real beacon, Redis, BLISS sessions, services and fault injection, for tests,
benchmarks and the demo. May import every layer below the top (tracker, families, core).
"""
