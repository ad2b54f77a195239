"""Measurement rigs: the device's figures measured, not assumed.

``bench`` and ``load`` on the shared broker + device rig (``measure``), inference timing
(``bench_inference``), hardware-in-the-loop ``replay``, the trial through a real device
(``sim_mqtt``), small ``figures``, and the arm64 check (``arm64_check.sh``, ``arm64_probe``).
"""
