"""Training data readers: AIM-94 logs, MIMIC tables, the companion cohorts, the demo's synthetic patient.

Files in, typed events or visits out (``aim94``, ``mimic``, ``cohorts``, ``synthetic``), and the
AIM-94 decision points in bulk (``decisions``). Imports only ``domain``; the device never imports
this package. Nothing here imports pandas, tensorflow or scikit-learn at import time.
"""
