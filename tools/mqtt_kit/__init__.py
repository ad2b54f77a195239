"""Clients that talk to a running device over MQTT, as a sensor, a nurse's tool or an integrator would.

``client`` publishes event logs and collects typed answers; ``publish`` validates and sends
events; ``monitor`` follows a device's outbound topics; ``flash`` delivers a signed bundle.
"""
