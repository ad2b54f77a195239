"""On-device runtime: bundle verification, LiteRT inference, safety supervisor.

Imports no tensorflow, pandas or scikit-learn (a test proves it).
"""
