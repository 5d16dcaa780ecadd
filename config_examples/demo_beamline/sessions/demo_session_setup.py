"""Setup file of the demo session (runs in the session's namespace at setup)."""

from bliss import current_session

print(f"demo session {current_session.name!r} ready")
