"""One planned run in its own process: ``python -m atssrepro.harness.worker JOB_JSON OUTCOME_FILE``.

The local queue starts this for each run (through torchrun for a DDP run), its output appended to
the run's ``train.log``. It executes the job with :func:`atssrepro.harness.runner.execute_job` and
the main process writes the outcome as JSON to ``OUTCOME_FILE``, which is how the queue learns that
a run was busy, failed or diverged (the exit code is 0 only when it is done). A process that dies
without a word (out of memory, SIGKILL) leaves no outcome: the queue reads the run folder instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from atssrepro import distributed
from atssrepro.engine.run_state import RunState
from atssrepro.fileio import write_json
from atssrepro.harness.runner import Job, execute_job
from atssrepro.terminal import plain_console


def main(argv: list[str]) -> int:
    job_json, outcome_file = argv
    job = Job(**json.loads(job_json))
    console = plain_console(stderr=True)
    outcome = execute_job(job, console)
    if distributed.is_main():
        write_json(Path(outcome_file), {"state": outcome.state.value, "message": outcome.message})
        if outcome.message:
            console.print(f"error: {outcome.message}")
    distributed.destroy()
    return 0 if outcome.state is RunState.DONE else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
