"""Data commands: the companion cohorts' counts and a synthetic MIMIC-IV folder for scale tests."""
