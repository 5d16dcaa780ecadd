"""Data files shipped with the package (the contract's event schema)."""
