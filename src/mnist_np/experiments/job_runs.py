"""One MLflow run per sweep job, however often the job was attempted or however it failed.

A job's run is known by its parent run and its job number (`sweep.job`). When Ray runs a job again
because the node running it died, the new attempt continues the run of the lost one (which the
store's dead-run check may have closed KILLED meanwhile) instead of adding a second child, and
records the attempt. When a job fails without a run of its own (its worker died before it opened
one, or the tracking server stayed away longer than the job waited), the sweep's driver records a
FAILED child run for it with the reason, so the parent's "N children, M failed" counts every job.

A grid sweep resumed (`hydra.sweeper.resume=<parent run id>`) takes the earlier sweep's job runs
over: its FINISHED jobs are not run again, the others continue their runs the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from ..tracking import liveness
from ..tracking.runs import FAILURE_TAG
from . import PARENT_ENV

log = logging.getLogger(__name__)
JOB_TAG = "sweep.job"
ATTEMPT_TAG = "sweep.attempt"  # on a job's run when Ray ran the job more than once: which attempt logged last
LOST_TAG = "sweep.lost_attempts"  # why the earlier attempts ended


def find(client: MlflowClient, experiment_id: str, parent_id: str, job: int) -> Run | None:
    """The run of job `job` of the sweep `parent_id`, if one exists."""
    found = client.search_runs(
        [experiment_id],
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}' AND tags.`{JOB_TAG}` = '{job}'",
        max_results=1,
    )
    return found[0] if found else None


def lost_attempt(client: MlflowClient, experiment_id: str, job: int) -> Run | None:
    """In a job of a sweep: the run an earlier attempt of this same job opened and did not finish
    (its process died: Ray then runs the job again), which this attempt continues; else None."""
    parent = os.environ.get(PARENT_ENV)
    earlier = find(client, experiment_id, parent, job) if parent else None
    if earlier is None or earlier.info.status not in ("RUNNING", "KILLED", "FAILED"):  # FAILED: a resumed sweep
        return None
    return earlier


def continue_lost(client: MlflowClient, earlier: Run) -> None:
    """Record on the continued run that an attempt was lost and why (the dead-run check's reason
    when it closed the run, else that its process stopped)."""
    tags = earlier.data.tags
    attempt = int(tags.get(ATTEMPT_TAG, "1")) + 1
    why = tags.get(FAILURE_TAG) or f"attempt {attempt - 1} stopped without ending its run (its node or process died)"
    lost = "; ".join(filter(None, [tags.get(LOST_TAG), f"attempt {attempt - 1}: {why}"]))
    # This process owns the run from now: the store's dead-run check must not close it again.
    for key, value in liveness.owner_tags().items():
        client.set_tag(earlier.info.run_id, key, value)
    client.set_tag(earlier.info.run_id, ATTEMPT_TAG, str(attempt))
    client.set_tag(earlier.info.run_id, LOST_TAG, lost[:5000])
    if FAILURE_TAG in tags:
        client.delete_tag(earlier.info.run_id, FAILURE_TAG)
    log.warning("job continues the run %s of its attempt %d, which was lost: %s", earlier.info.run_id, attempt - 1, why)


def adopt(client: MlflowClient, experiment_id: str, earlier: str, parent: str) -> int:
    """The job runs of the sweep `earlier` moved under the sweep `parent` that resumes it (one
    sweep, one run per job); returns how many."""
    children = client.search_runs([experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{earlier}'", max_results=50000)
    for run in children:
        client.set_tag(run.info.run_id, MLFLOW_PARENT_RUN_ID, parent)
    return len(children)


def finished_jobs() -> dict[int, float]:
    """In a sweep's driver: the jobs of this sweep that have FINISHED runs already (a resumed
    sweep's, adopted from the one it resumes), with their kept validation accuracy."""
    from . import RANK_METRIC

    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return {}
    client = MlflowClient()
    experiment_id = client.get_run(parent).info.experiment_id
    query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}' AND attributes.status = 'FINISHED'"
    found = client.search_runs([experiment_id], query, max_results=50000)
    return {
        int(run.data.tags[JOB_TAG]): run.data.metrics[RANK_METRIC]
        for run in found
        if JOB_TAG in run.data.tags and RANK_METRIC in run.data.metrics
    }


def record_failure(job: int, overrides: Sequence[str], reason: str) -> None:
    """In the sweep's driver, for job `job` that failed: its run, if still open, ends FAILED with
    `reason`; if it has none, a FAILED child run with its overrides as params stands for it. A
    store that cannot be reached now is logged, not raised: the sweep goes on."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        client = MlflowClient()
        experiment_id = client.get_run(parent).info.experiment_id
        run = find(client, experiment_id, parent, job)
        if run is None:
            tags = {
                MLFLOW_PARENT_RUN_ID: parent,
                JOB_TAG: str(job),
                MLFLOW_RUN_NAME: f"job {job} (no run of its own)",
                FAILURE_TAG: reason[:5000],
            }
            run = client.create_run(experiment_id, tags=tags)
            with contextlib.suppress(Exception):  # an override that is not a plain key=value
                client.log_batch(run.info.run_id, params=_params(overrides))
        elif run.info.status != "RUNNING":
            return  # the job ended its run itself, with its own status and reason
        else:
            client.set_tag(run.info.run_id, FAILURE_TAG, reason[:5000])
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
    except Exception as exc:  # the store is away: the parent's count will miss this job, the log names it
        log.error("error: job %d failed (%s) and its failure could not be recorded in MLflow: %s", job, reason, exc)


def failed_before_run(ret) -> str:
    """The reason recorded for a job that returned failure without a run of its own (its log says why)."""
    where = f"; its log is in {ret.working_dir}" if ret.working_dir else ""
    return f"the job failed before it could open its MLflow run (the tracking server away, say){where}"


def record_failures(returns: Sequence, first_job: int = 0) -> None:
    """In the driver, after a grid's jobs ended: a run for every failed job that has none."""
    import math

    for job, ret in enumerate(returns, start=first_job):
        value = ret._return_value
        if ret.status.name == "FAILED" or (isinstance(value, float) and math.isnan(value)):
            record_failure(job, ret.overrides or [], failed_before_run(ret))


def _params(overrides: Sequence[str]) -> list:
    from mlflow.entities import Param

    pairs = (o.lstrip("+").split("=", 1) for o in overrides if "=" in o and not o.lstrip("+").startswith("hydra."))
    return [Param(key, value[:6000]) for key, value in pairs]
