"""Delivery: the durable outbox, delivery clients and the loop that pushes events to services.

May import: ``core``, ``config_node``, ``errors``; the tracker and the commands import it.
"""
