"""Errors a user can fix. Entry points print them as one line and exit non-zero, without a traceback."""


class UserError(Exception):
    """Bad input: the message names the problem and the fix."""


class ConfigError(UserError):
    """A parameter is missing, of the wrong type, unknown or out of range."""


class DataError(UserError):
    """An input file is missing, corrupt or not what the stage expects."""


class DownloadError(UserError):
    """No source delivered a file with the published checksum."""


class TrainingError(UserError):
    """Training produced something unusable, such as non-finite weights."""
