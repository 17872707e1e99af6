"""Every error the pipeline raises on purpose, and the exit codes of the commands. Messages say what is wrong
and what to do about it."""

#: Exit status of a run whose every tile decoded.
EXIT_OK = 0
#: Exit status of an operator error (:class:`GSPError`): nothing was written; the message says what to change.
EXIT_OPERATOR_ERROR = 2
#: Exit status of a run that wrote its product but lost tiles (listed for retransmission).
EXIT_TILES_LOST = 3


class GSPError(Exception):
    """Base class: an error the operator can act on (the CLI prints it without a traceback)."""

    exit_code = EXIT_OPERATOR_ERROR


class PassFormatError(GSPError):
    """The pass container (header or framing) cannot be parsed."""


class DesyncError(GSPError):
    """The entropy decoder did not reproduce the encoder's symbols (witness mismatch), also in strict mode."""


class CheckpointError(GSPError):
    """A model checkpoint is unreadable, of an unknown format, or does not match what was asked for."""


class SceneError(GSPError):
    """A GeoTIFF scene cannot be read or has no usable bands."""


class ConfigError(GSPError):
    """A configuration or registry file is invalid."""


class ProductError(GSPError):
    """A Zarr product is missing, incomplete or inconsistent."""


class TrainingError(GSPError):
    """Training cannot go on (the loss diverged); the message says from where to restart."""


class OrchestrationError(GSPError):
    """Prefect's API or the Dask cluster cannot be reached or started; the message names the setting to change."""
