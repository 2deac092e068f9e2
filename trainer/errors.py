"""The trainer's expected failures: one root, under the inference core's EmotionError.

`python -m trainer` prints these as one `error: ...` line (the message names the fix); anything else (a torch bug,
out of memory) keeps its traceback.
"""
from emotion.errors import EmotionError


class TrainerError(EmotionError):
    """A failure the user can fix; the message says how."""


class ConfigError(TrainerError):
    """A bad config value; the message names the field and what it accepts."""


class DataError(TrainerError):
    """The data set cannot be used; the message says what to give instead."""


class InitError(TrainerError):
    """Starting weights could not be had; the message names the flags that fix it."""


class CheckpointError(TrainerError):
    """No readable checkpoint; the message says which files were tried and how to start over."""


class HubError(TrainerError):
    """A push to the Hub failed; the message names the fix (token, repo id, network), never the token."""
