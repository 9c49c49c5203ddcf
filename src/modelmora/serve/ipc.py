"""What crosses the pipe between the router and a worker, and how.

The router sends :class:`Request` (an id and a task-specific body), :class:`Cancel` and
:class:`Stop`; the worker answers every request with one or more :class:`Reply` messages
carrying the same id, the last one marked ``last`` (the end marker). A one-shot task (a batch
of embeddings) answers with a single ``Reply(id, Output, last=True)``; a streaming task
(token generation) with ``Chunk`` replies and a final one. Ids let several requests be in
flight on one worker at once, which a continuously batching runner needs; ``Cancel`` asks the
worker to drop a request it has not finished (it still sends the end marker, so the router
knows the request is gone).

Messages are small dataclasses pickled with protocol 5; numpy arrays of 64 KiB or
more travel as out-of-band buffers (their bytes are written to the pipe as-is, never copied
into the pickle stream), smaller ones inside it; none is ever turned into JSON. Only the
standard library and numpy are imported here because the worker imports this module before
anything else.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal, TypeAlias

import numpy as np

from modelmora.cache.filecheck import FileDigest
from modelmora.imaging import DEFAULT_MAX_IMAGE_PIXELS

__all__ = [
    "Cancel",
    "Chunk",
    "Failed",
    "Generate",
    "ModelInfo",
    "Output",
    "Ready",
    "Replies",
    "Reply",
    "Request",
    "RunTensors",
    "RunText",
    "StepStats",
    "Stop",
    "TensorSpec",
    "WorkerSpec",
    "recv_msg",
    "send_msg",
]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to load its model (a plain dataclass: no pydantic import)."""

    name: str
    artifact_dir: str
    onnx_file: str
    task: str
    provider: str
    threads: int = 0
    spin: bool | None = None
    """None = the runner's ``default_spin()``."""
    prefill_chunk: int = 512
    """Text generation: prompt tokens processed per step while other sequences decode."""
    max_batch_tokens: int = 16384
    """Text encoders: rows × padded length per ONNX Runtime call (bounds the worker's memory)."""
    runner: str = "modelmora.serve.runners.base:TensorRunner"
    """``module:Class`` of the task's worker-side runner (from the serve task table)."""
    files: tuple[FileDigest, ...] = ()
    """The artifact's files as its record lists them: checked before the session loads."""
    store_root: str | None = None
    """The store whose stat cache makes that check a ``stat`` per file."""
    verify_full: bool = False
    """Re-hash every file on each load instead of trusting the stat cache."""
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    """Image models: the largest image (width × height) the worker decodes."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the v2 protocol shows it; ``-1`` marks a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded worker reports about its model (the router caches it for metadata)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    providers: tuple[str, ...]
    batchable: bool
    labels: tuple[str, ...] | None = None
    embedding_dim: int | None = None
    max_seq_length: int | None = None
    kv_bytes_per_token: int | None = None
    """Text generation: KV-cache bytes one token of one sequence holds."""
    pid: int = 0
    rss_bytes: int = 0


@dataclass(frozen=True)
class RunText:
    texts: list[str]


@dataclass(frozen=True)
class RunTensors:
    inputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class RunItems:
    """Inputs of an image model, in order: encoded images (``bytes``, decoded in the
    worker), preprocessed images (``[3, H, W]`` float32 arrays) and, for models with a text
    tower too, texts (``str``)."""

    items: list[str | bytes | np.ndarray]


@dataclass(frozen=True)
class Generate:
    """One sequence to generate (text generation): already tokenized by the router."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    ignore_eos: bool = False
    """Generate ``max_tokens`` whatever comes (benchmarks; vLLM's extension of the same name)."""


@dataclass(frozen=True)
class GenerateImages:
    """One text-to-image request: prompts already tokenized and checked by the router."""

    prompt_ids: np.ndarray
    negative_ids: np.ndarray | None
    """None: no classifier-free guidance."""
    n: int
    height: int
    width: int
    steps: int
    guidance: float
    seed: int


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Ready:
    info: ModelInfo


@dataclass(frozen=True)
class Output:
    arrays: dict[str, np.ndarray]
    tokens: np.ndarray | None = None
    """Tokens per input row (text models), for the OpenAI ``usage`` block."""
    rss_bytes: int = 0


Chunk: TypeAlias = dict[str, Any]
"""One piece of a streamed answer: task-specific fields (e.g. the new text). A plain dict,
not a dataclass: a stepping runner sends one per running request per step, and pickle
handles a dict at C speed where a dataclass costs a Python-level reduce per object."""


@dataclass(frozen=True)
class Failed:
    message: str
    kind: Literal["load", "input", "internal"] = "internal"
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    id: int
    body: Any
    """The task's payload: ``RunText``, ``RunTensors`` or a task-specific dataclass."""


@dataclass(frozen=True)
class Cancel:
    id: int


@dataclass(frozen=True)
class Reply:
    id: int
    body: Output | Chunk | Failed
    last: bool = True
    """The end marker: no more replies for this id."""


@dataclass(frozen=True)
class StepStats:
    """What one step of a stepping runner did, for the router's metrics: sent once per step
    with its replies, not repeated in each sequence's chunk (the router would otherwise
    observe it once per streamed token)."""

    batches: tuple[int, ...]
    """Sequences in each model call of the step (a decode call, a prompt call)."""
    tokens: int
    """Tokens the step produced."""
    kv_bytes: int
    """KV cache the worker holds once the step is done."""
    model_seconds: float = 0.0
    """Spent inside model calls (ONNX Runtime) since the last report."""
    step_seconds: float = 0.0
    """Spent in steps since the last report: the model calls and the worker's own work
    between them (sampling, detokenizing, joining and dropping rows)."""
    rss_bytes: int = 0
    """The worker's resident memory, when measured with this report (0: not this time)."""


@dataclass
class Replies:
    """Several replies in one message (what one step of a stepping runner produced), as
    columns: reply ``i`` is ``bodies[i]`` for request ``ids[i]``, its end marker ``last[i]``.

    Columns, not a list of :class:`Reply`: a step of 32 sequences as 32 ``Reply`` objects
    took ~100 µs to pickle in the worker and ~60 µs to unpickle in the router, as three
    lists ~3 µs each way, and a generation sends one such message per token of every stream.
    """

    ids: list[int] = field(default_factory=list)
    bodies: list[Output | Chunk | Failed] = field(default_factory=list)
    last: list[bool] = field(default_factory=list)
    stats: StepStats | None = None

    def add(self, request_id: int, body: Output | Chunk | Failed, last: bool) -> None:
        self.ids.append(request_id)
        self.bodies.append(body)
        self.last.append(last)


Message = WorkerSpec | Request | Cancel | Stop | Ready | Reply | Replies | Output | Failed


_IN_BAND_MAX = 64 * 1024
"""Arrays smaller than this travel inside the pickle: one frame instead of three is worth
more than the copy of, say, one 384-float embedding."""


def send_msg(conn: Connection, msg: Message) -> None:
    """Send ``msg`` as one header frame plus one raw frame per large out-of-band buffer."""
    buffers: list[pickle.PickleBuffer] = []

    def in_band(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes < _IN_BAND_MAX:
            return True
        buffers.append(buf)
        return False

    header = pickle.dumps(msg, protocol=5, buffer_callback=in_band)
    conn.send_bytes(len(buffers).to_bytes(4, "little") + header)
    for buf in buffers:
        conn.send_bytes(buf.raw())


def recv_msg(conn: Connection) -> Message:
    """Receive what :func:`send_msg` sent; raises ``EOFError`` when the other side is gone."""
    first = conn.recv_bytes()
    count = int.from_bytes(first[:4], "little")
    frames = [conn.recv_bytes() for _ in range(count)]
    msg: Message = pickle.loads(first[4:], buffers=frames)
    return msg
