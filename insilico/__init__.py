"""The in-silico trial: the advisor deciding the doses of simglucose's UVA/Padova 2008 patients.

``advisor simulate`` (docs/insilico.md): ``patient`` integrates the virtual patients, ``population``
draws the held-out ones, ``protocol`` says what happens to each one day by day, ``arms`` says who
decides the regular insulin (the real device path: validation, store, features, LiteRT model,
supervisor), ``basal`` and ``cgm`` supply basal insulin and sensor readings, ``trial`` runs it and
``metrics`` and ``report`` measure the true glucose trace. Imports ``domain`` and ``device`` only.
"""
