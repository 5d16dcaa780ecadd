"""Delivery: the durable outbox, delivery clients and the loop that pushes events to services."""
