"""Worker-side halves of the serve tasks: what runs inside a model's worker process.

Imported only by the worker, by the dotted name the task table gives
(``WorkerSpec.runner``); these modules import numpy, onnxruntime and tokenizers, never
fastapi, pydantic or torch.
"""
