"""Building the benchmarks' models without the exporters' chatter on the terminal.

Converting a model makes torch, transformers and optimum print warnings (TracerWarnings, the
``torch_dtype`` deprecation, optimum's advice) that say nothing about the figures; install
sends them to the run log, the benchmarks drop them so their tables stand alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from modelmora.pipeline.progress import library_logs_to

_DROPPED = logging.getLogger("modelmora.bench.library_chatter")
_DROPPED.addHandler(logging.NullHandler())
_DROPPED.propagate = False


@contextmanager
def library_chatter_dropped() -> Iterator[None]:
    with library_logs_to(_DROPPED):
        yield
