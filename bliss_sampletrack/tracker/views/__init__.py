"""What the tracker shows in the BLISS shell, as text: one sample's story (``tracker.where``),
the pucks of its changers (``tracker.pucks``, the changer's ``__info__``), and the shell's
argument checks and tab completion.

Each view is split in two: gathering (reads Redis, the outbox, the changer; no BLISS import)
and rendering (pure: data in, text out, tested in ``tests/unit/tracker/test_views.py``).

- :mod:`~bliss_sampletrack.tracker.views.text`: local times with their zone, tables, the
  highlight of the mounted row (ANSI bold on a terminal, a ``>`` marker always);
- :mod:`~bliss_sampletrack.tracker.views.scanlog`: the scans taken during each mount, kept in
  Redis from the scan tag's path (the story's scan list);
- :mod:`~bliss_sampletrack.tracker.views.story`: one sample's events, scans and deliveries;
- :mod:`~bliss_sampletrack.tracker.views.pucks`: a changer's positions with the registry's names.

The shell commands' argument checks (``command``) and ``commands_dir`` are in
:mod:`bliss_sampletrack.core.shell`, below the changers, which use them too.
"""
