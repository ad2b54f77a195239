"""Training side: data set assembly, Keras models, baselines, evaluation, TFLite export, bundles."""
