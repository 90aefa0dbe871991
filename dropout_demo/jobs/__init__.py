"""The job layer, one concern per module.

- :mod:`.admission`: pure limit checks (what a shared server accepts);
- :mod:`.identity`: a run's key (everything that determines its result);
- :mod:`.registry`: runs, the sessions attached to them, snapshots, memory bounds;
- :mod:`.scheduler`: the queue that is fair between sessions, the running cap, dispatch;
- :mod:`.leases`: owners' live sessions and the grace period of those who left;
- :mod:`.executors`: where a run computes: the seam, and threads of this process;
- :mod:`.process_executor` (with :mod:`.process_worker`): a worker process beside the server,
  the default; :mod:`.ray_executor`: a Ray cluster;
- :mod:`.manager`: the process-wide facade that ties them together.
"""

from .admission import JobError, Limits
from .executors import THREAD_PREFIX
from .identity import run_key
from .manager import JobManager, available_cores, get_manager
from .registry import (
    CANCELLED,
    DIVERGED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    TERMINAL,
    JobSnapshot,
)

__all__ = [
    "CANCELLED",
    "DIVERGED",
    "DONE",
    "FAILED",
    "QUEUED",
    "RUNNING",
    "TERMINAL",
    "THREAD_PREFIX",
    "JobError",
    "JobManager",
    "JobSnapshot",
    "Limits",
    "available_cores",
    "get_manager",
    "run_key",
]
