"""Property-based requests generated from the app's own OpenAPI document: never a 5xx.

Runs the schemathesis CLI against the live server (its pytest plugin does not support
pytest 9 yet). Only the ``not_a_server_error`` check is asserted: 4xx answers to generated
garbage are the point, and their messages are covered by the other test files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from serve_support import Artifacts, run_server

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_generated_requests_never_get_a_server_error(artifacts: Artifacts) -> None:
    models = {"emb": artifacts.emb, "cls": artifacts.cls, "lin": artifacts.lin}
    with run_server(models, "--preload", "emb,cls,lin") as server:
        result = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                server.url + "/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--generation-deterministic",
                "--no-shrink",
                "--request-timeout",
                "30",
                "--suppress-health-check",
                "all",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        log = server.stderr()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:] + log[-3000:]
    assert "Traceback" not in log
