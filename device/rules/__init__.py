"""Pure dose logic, tested case by case without sockets, files or clocks.

The safety supervisor (``safety``), the dosing plan by weight and its titration (``plan``), one
decision from window to verdict (``decision``), when checks and basal answers are due
(``check_schedule``, ``basal_time``), what a person may still do with an answer and what retires
it (``dose_responses``, ``retirement``), the ward overview and the clinician's day (``ward``,
``daily_summary``), look-alike patient ids and a clock set back (``patient_ids``,
``clock_watch``). Imports only ``domain`` and ``device.contract``.
"""
