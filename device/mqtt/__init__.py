"""The device's MQTT side: the link, inbound messages to their handlers, acknowledgements.

``client`` configures paho-mqtt from a ``BrokerConfig`` (shared with the tools);
``communicator`` holds the two connections, subscriptions and typed publishing; ``dispatcher``
queues inbound messages for one worker thread; ``handlers`` and ``ota_installer`` handle the
``events``, ``patients`` and ``model`` topics.
"""
