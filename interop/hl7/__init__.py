"""HL7 v2 over MLLP: ``ORU^R01`` glucose results and ``ADT`` admissions in, ``ACK`` out.

``mllp`` frames and unframes bytes, ``messages`` maps one message to events or to the reason it
is refused and writes the acknowledgement (pure), ``listener`` is the TCP server that publishes
the events and acknowledges each message only once the broker has them.
"""
