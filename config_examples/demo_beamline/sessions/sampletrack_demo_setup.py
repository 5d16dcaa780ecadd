"""Setup file of the sample-tracking demo session (runs in the session's namespace)."""

from bliss import current_session

print(f"session {current_session.name!r}: type 'tracker' for the mounted sample, 'sc' for the changer")
