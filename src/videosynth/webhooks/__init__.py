"""Telling clients when their tasks change: signed webhook deliveries, made by workers from the store's rows.

The store records every event and its deliveries in the transaction that changes a task (``tasks/``); this
package sends them (``pump.py``), signs them the Standard Webhooks way (``signing.py``) and spaces out the
tries (``schedule.py``). What a body says is the API dialect's business: the pump is given a ``Render``.
"""
