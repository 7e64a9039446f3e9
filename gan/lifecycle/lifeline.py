"""Run a command as a process group that ends, whole, when the process that started it dies.

    python -m gan.lifecycle.lifeline CMD [ARGS...]      # stdin: the lifeline (its end of file: the starter died)

The starter (a sweep's trial, in a threaded Dask worker) starts this with `start_new_session=True` and a pipe as
stdin, which it keeps open. This process runs CMD as its child, in its session and process group, so everything
CMD starts (`dvc exp run` → `python -m gan train` → its data workers) is in that group too. When stdin reaches end
of file while CMD still runs — the starter closed it, or died, SIGKILL included, which closes it — the whole group
is killed. No `preexec_fn` in the threaded starter (the fork hazard Python's docs warn about), and unlike
PR_SET_PDEATHSIG (which fires on the death of the starting *thread*, and does not reach grandchildren) it ends the
whole tree. The exit status is CMD's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m gan.lifecycle.lifeline CMD [ARGS...]", file=sys.stderr)
        return 2
    if os.getpgrp() != os.getpid():  # started without start_new_session: a group of its own all the same, so
        os.setpgid(0, 0)  # that the kill below can never reach the starter's group
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def watch() -> None:
        while os.read(0, 65536):  # blocks until the starter closes the pipe or dies (the raw descriptor: a thread
            pass  # blocked in a buffered read would hold its lock at interpreter shutdown)
        if child.poll() is None:
            os.killpg(os.getpgrp(), signal.SIGKILL)  # this process, CMD and all it started

    threading.Thread(target=watch, daemon=True).start()
    rc = child.wait()
    return rc if rc >= 0 else 128 - rc  # killed by a signal: the shell's convention


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
