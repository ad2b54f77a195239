"""The ``advisor`` command-line interface."""
