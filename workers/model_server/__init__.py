"""ONNX Runtime model server speaking the Open Inference Protocol (KServe v2 REST).

Run with ``python -m workers.model_server --model PATH --name NAME --port PORT``.
"""

__version__ = "0.1.0"
