"""Error types that carry a message fit to show a user as it is (one line, names the culprit)."""


class MedalpyError(Exception):
    """Base of every error medalpy raises on purpose; the CLI prints it and exits with code 2."""


class DataError(MedalpyError):
    """A dataset file is missing, unreadable, damaged or not in its canonical format."""


class ConfigError(MedalpyError):
    """An option or configuration value is unknown or out of range."""


class CheckpointError(MedalpyError):
    """A checkpoint or model file is damaged or of another format version."""


class TrainingDiverged(MedalpyError):
    """The loss became NaN or infinite."""
