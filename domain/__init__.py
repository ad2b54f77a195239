"""The domain training and the device share: events, their validation, features, dose context.

One implementation each of the event model (``events``), the untrusted-payload validator
(``validation``, ``limits``), the decision-point features and windows (``features``,
``insulin_activity``), what a dose decision knows besides the model input (``dose_context``),
input scaling (``scaling``) and the companion models' visit encoding (``visits``,
``vocabulary``). Pure logic on the standard library and numpy; imports no other package of the
project, so the device and training cannot read the same event two ways.
"""
