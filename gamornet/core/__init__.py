"""The framework-free core: the network description, argument checks, thresholds, safe outputs, progress.

Nothing here imports TensorFlow, Keras, TFLearn, PyTorch or JAX.
"""
