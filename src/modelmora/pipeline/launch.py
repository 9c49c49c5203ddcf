"""Start install runs from the CLI so that the Dagster UI can re-execute them.

``execute_job`` makes runs that carry no *remote job origin*, and the UI's re-execution
(``launchRunReexecution``, the "Re-execute" buttons) starts by reading the parent run's
origin to find its code location: on such runs it fails with ``CheckError: Expected non-None
value`` (dagster#19458). So the CLI creates each run itself, stamped with the origin of the
job as the UI's code location serves it (module :data:`UI_LOCATION_MODULE`, loaded by
``modelmora ui``), and executes it here in this process, as ``execute_job`` would. Only the
location name, the repository name and the job name of that origin are used to resolve it;
the re-executed run gets the parent's run config, so it works on the same project and store.

The pieces of Dagster used here (``ModuleTarget``, ``RemoteJobOrigin``, ``execute_run``)
are internal to it; ``tests/e2e/test_ui.py`` drives a real re-execution and fails if they
change under us.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

UI_LOCATION_MODULE = "modelmora.pipeline.location"
"""The module ``modelmora ui`` gives ``dagster dev -m``: the code location runs point at."""

_SINGLE_REPOSITORY = "__repository__"
"""The repository name Dagster gives a module's ``Definitions``."""


def ui_job_origin(job_name: str) -> Any:
    """The origin of ``job_name`` in the UI's code location (a Dagster ``RemoteJobOrigin``)."""
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.workspace.load_target import ModuleTarget

    (location,) = ModuleTarget(UI_LOCATION_MODULE, None, None, None).create_origins()
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, _SINGLE_REPOSITORY), job_name)


def execute(
    job: Any, *, instance: Any, run_config: Mapping[str, Any], tags: Mapping[str, str]
) -> Any:
    """Run the reconstructable ``job`` in this process; a ``JobExecutionResult``."""
    from dagster._core.execution.api import execute_run

    definition = job.get_definition()
    run = instance.create_run_for_job(
        job_def=definition,
        run_config=run_config,
        tags=tags,
        job_code_origin=job.get_python_origin(),
        remote_job_origin=ui_job_origin(definition.name),
    )
    return execute_run(job, run, instance, raise_on_error=False)
