"""Backend names used in manifests and CLIs, and the ONNX Runtime provider behind each.

One table for the benchmark stage and the server, so a backend means the same provider
everywhere.
"""

from __future__ import annotations

PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}
