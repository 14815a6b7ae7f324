"""The task domain: task records, their status machine and the store Protocol (the queue is the table)."""
