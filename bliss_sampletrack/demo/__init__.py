"""The main job: a simulated beamline in one command (``sampletrack demo``)."""
