"""Exit codes of the `threadloom` command: a script can tell a bad call from a failed run.

======  ==================================================================================
code    meaning
======  ==================================================================================
0       success
1       an unexpected internal error (a bug; set THREADLOOM_DEBUG=1 for the traceback)
2       bad usage or configuration: fix the command, the file or the option and rerun
3       the run failed at run time: a worker was unreachable or died, a verifier failed
130     interrupted (Ctrl-C)
======  ==================================================================================
"""

from __future__ import annotations

from threadloom.errors import ConfigError, ThreadloomError

SUCCESS = 0
UNEXPECTED = 1
USAGE = 2
RUNTIME = 3
INTERRUPTED = 130


def exit_code_for(exc: ThreadloomError) -> int:
    """USAGE for a ConfigError (the caller can fix the input), RUNTIME for every other error."""
    return USAGE if isinstance(exc, ConfigError) else RUNTIME
