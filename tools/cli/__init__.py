"""``advisor``: the command-line interface. Thin: parses options, calls the packages.

``main`` is the entry point; one command module per group of commands; ``common`` holds the
shared options (broker options, config overrides) and ``errors`` the mistakes a user can make,
printed as one line.
"""
