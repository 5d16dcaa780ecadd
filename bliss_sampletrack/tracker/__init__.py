"""The SampleTracker controller: state machine, persistence, sample registries."""
