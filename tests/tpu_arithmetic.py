"""Edge TPU arithmetic for the libedgetpu stand-in (whose delegate claims no node: "TPU" models run on the CPU
kernels, so the stand-in cannot change what they compute).

The Edge TPU runs an edgetpu_compiler output whose requantization rounds differently from TFLite's CPU kernels:
its outputs are a few raw units off the CPU model's, and on near-ties the top-1 can change (Coral promises no
bit-exactness; TFLite's quantization spec: hardware implementations "are not bit-exact"). `tpu_rounded` gives
the stand-in such a model: the CPU model with its classifier's biases moved per class by up to `logit_steps`
quantization steps of the logits (a fixed pseudo-random pattern), written as a new file. Only numpy and the
TFLite runtime: no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefleet.device.runtime.interpreter import Interpreter

RUNTIME_THREADS = 1


def _classifier_bias(interpreter: Interpreter, classes: int) -> tuple[np.ndarray, float, float]:
    """The last int32 bias of `classes` values, its scale, and the scale of the logits it adds to."""
    details = interpreter.get_tensor_details()
    biases = [d for d in details if d["dtype"] == np.int32 and tuple(d["shape"]) == (classes,)]
    if not biases:
        raise ValueError(f"no int32 bias of {classes} values: not a quantized classifier")
    bias = biases[-1]
    logits = [d for d in details if d["index"] > bias["index"] and d["dtype"] != np.int32
              and int(np.prod(d["shape"])) == classes and d["quantization"][0] > 0]
    return interpreter.get_tensor(bias["index"]), bias["quantization"][0], logits[0]["quantization"][0]


def tpu_rounded(model: Path, dest: Path, *, logit_steps: float, seed: int = 0) -> Path:
    """`model` with its classifier biases moved by up to ±`logit_steps` steps of the logits' quantization."""
    data = model.read_bytes()
    interpreter = Interpreter(model_content=data, num_threads=RUNTIME_THREADS)
    classes = int(np.prod(interpreter.get_output_details()[0]["shape"]))
    bias, bias_scale, logits_scale = _classifier_bias(interpreter, classes)
    at = data.find(bias.tobytes())
    if at < 0 or data.find(bias.tobytes(), at + 1) >= 0:
        raise ValueError(f"{model}: the classifier bias is not stored once, as is")
    steps = np.random.default_rng(seed).uniform(-logit_steps, logit_steps, size=classes)
    moved = (bias.astype(np.int64) + np.round(steps * logits_scale / bias_scale)).astype(np.int32)
    dest.write_bytes(data[:at] + moved.tobytes() + data[at + len(moved.tobytes()):])
    return dest
