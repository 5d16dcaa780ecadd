"""The main job: a simulated beamline in one command (``sampletrack demo``).

May import everything (top layer): the test bed, the tracker, the service.
"""
