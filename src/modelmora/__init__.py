"""ModelMora: lock, install, convert, validate, benchmark and serve ML models."""

__version__ = "0.1.0"
