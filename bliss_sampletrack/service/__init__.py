"""The tracking service (reference server of the contract). Imports nothing from BLISS."""
