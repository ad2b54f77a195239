"""In-silico clinical trial of the advisor on the UVA/Padova 2008 virtual patients of simglucose.

``advisor simulate`` (docs/insilico.md): the real decision path (validation, store, features,
LiteRT model, supervisor) decides the doses of simulated patients; glucose outcomes are
measured on the true glucose trace.
"""
