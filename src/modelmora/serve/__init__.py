"""``modelmora serve``: an HTTP router in front of one ONNX Runtime worker process per model.

Kept import-free on purpose: every worker process imports this package, and anything
imported here would be paid for on each model load (and torch must never be).
"""
