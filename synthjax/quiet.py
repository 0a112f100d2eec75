"""Keep libraries' start-up chatter (TensorFlow's, Beam's) out of a binary's output.

TensorFlow (which seqio and TFDS import) writes INFO lines from C++ straight to file
descriptor 2 when it loads, before any logging setting applies (TF_CPP_MIN_LOG_LEVEL does not
stop them in 2.21). Importing it once with fd 2 pointed at /dev/null keeps a binary's output
its own; an import that fails restores fd 2 first, so its error still shows. TensorFlow is
kept off the GPUs (JAX owns them).
"""

import os
import sys


def import_tensorflow() -> None:
  if "tensorflow" in sys.modules:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    try:
      import seqio  # noqa: F401  (imports tensorflow and tensorflow_text)
      import tensorflow as tf
      # TensorFlow only reads data and writes summaries here: it must not take GPU memory
      # from JAX, and its CUDA probe's error on a machine without a GPU stays out of sight.
      tf.config.set_visible_devices([], "GPU")
    finally:
      os.dup2(saved, 2)
  finally:
    os.close(devnull)
    os.close(saved)
  import absl.logging

  absl.logging.set_verbosity(absl.logging.WARNING)


def import_beam() -> None:
  """Beam's import logs a warning on the root logger when the optional BigQuery client is not
  installed (synthjax reads and writes through fsspec and never uses it)."""
  if "apache_beam" in sys.modules:
    return
  import logging

  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.ERROR)
  try:
    import apache_beam  # noqa: F401
  finally:
    root.setLevel(level)
