"""The one base class of failures the stage commands report as a single clear line.

A stage raises a subclass when the cause is outside the code (a mirror, a file, the
data, the hyperparameters) and its message already says what was wrong and what to do;
`python -m gan` prints it without a traceback and exits 1. Anything else is a bug and
keeps its traceback. Kept apart from the stage modules so the CLI can catch it without
importing them (which would make every stage depend on every stage's code).
"""


class PipelineError(Exception):
    """A failure with a cause outside the code and a message that names it."""
