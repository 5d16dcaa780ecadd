"""The ``sampletrack`` subcommands that span several layers (top layer: they may import the tracker,
delivery and BLISS). Subcommands of one layer stay in it (``tagging.annotate_cli``)."""
