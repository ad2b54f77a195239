"""Training: data sets, Keras networks, baselines, TFLite export, bundles and their reports.

``advisor train dose`` (``pipeline``, ``network``, ``dataset``, ``export``, ``report``), the
companion models on MIMIC (``companion`` and its networks, metrics and report), and ``evaluation``
(a bundle run through the device's own inference path on every AIM-94 decision point). Imports
``domain``, ``preprocessing`` and ``device``; nothing below imports it.
"""
