"""The release pipeline (Prefect): train -> quantize -> compile -> evaluate -> sign -> publish.

Keras runs on TensorFlow here. Set once, in the package's `__init__`, which runs before any module of the
package can import Keras or TensorFlow.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
