"""The models a device runs: bundles in, verified, on LiteRT.

``bundle`` opens and verifies a bundle (``signing``: Ed25519); ``choice`` picks the dose bundle
at start; ``inference`` runs the dose model (scaling, int8 TFLite); ``companion`` and ``risk``
run the companion models; ``ota`` frames an over-the-air transfer and ``install`` writes a bundle
atomically. No MQTT here: the ``model`` topic's handler lives in ``device.mqtt``.
"""
