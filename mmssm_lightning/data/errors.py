"""The data errors a run stops with. All are ``ValueError``s with one-line messages naming the
config key or the file (and record) at fault; ``mmssm-train`` prints them without a traceback."""

from __future__ import annotations


class DataValidationError(ValueError):
    """A data file, record or image is malformed."""


class ImageCheckError(DataValidationError):
    """``data.check_images`` found an image that is missing or does not decode."""


class NoTrainingBatchesError(DataValidationError):
    """The train split gives no batch: fitting would train nothing and still exit 0."""


class NothingSupervisedError(DataValidationError):
    """``data.max_length`` cuts every answer away: the loss would be 0 at every step."""
