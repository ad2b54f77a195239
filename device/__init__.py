"""The bedside runtime: MQTT in, a supervised suggestion out, shown on a bedside page.

Layered bottom up: ``contract`` (every message and topic), ``rules`` (pure dose logic: the safety
supervisor, the plan, the decision, what a person may still do with an answer), ``config``,
``state`` (SQLite), ``models`` (bundles, signatures, LiteRT inference, over-the-air transfer),
``advisor`` (event in → stored → suggestion out, no sockets), ``mqtt`` (the link, the dispatcher
and the handlers), ``page`` (the bedside page and its HTTP server) and ``service`` (the wiring).
No layer imports one above it (tests/test_architecture.py); imports only ``domain`` of the
project, and no tensorflow, pandas or scikit-learn (tests/test_dependencies.py).
"""
