"""The SampleTracker controller: state machine, persistence, sample registries.

May import: ``changers``, ``tagging``, ``delivery``, ``readers``, ``core``, ``config_node``, ``errors``;
only the test tools, the commands and the demo import it.
"""
