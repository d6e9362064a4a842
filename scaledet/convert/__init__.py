"""Readers of other frameworks' checkpoints and data files, and converters from them to scaledet
(no TensorFlow or MindSpore needed at run time)."""
