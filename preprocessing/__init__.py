"""Event model, validation, readers and feature engineering shared by training and the device.

Nothing here imports pandas, tensorflow or scikit-learn at import time.
"""
