"""What the device keeps: SQLite (WAL) and what happens around it.

``store`` holds accepted events, suggestions, responses and the audit trail; ``delivery`` records
which suggestions the broker acknowledged; ``storage_recovery`` decides what the device does
while SQLite refuses writes.
"""
