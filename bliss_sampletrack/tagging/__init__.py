"""Putting the mounted sample on every scan: scan_info/HDF5 tag, ICAT dataset fields, scan policy.

May import: ``core``, ``errors``; the tracker installs its hooks.
"""
