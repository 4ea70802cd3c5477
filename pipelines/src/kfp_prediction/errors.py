"""Errors of a prediction run, each naming what is wrong, and whether another try can help.

``permanent``: bad input, the same on every try (Airflow should not retry); ``input``: the
run parameter at fault. The components report both to the bridge (``kfp_prediction.report``).
No error here is raised after a partition was written.
"""


class PredictionInputError(ValueError):
    """Base class: the run cannot proceed with these inputs; nothing was written."""

    permanent = True
    input: str | None = None


class TargetDateError(PredictionInputError):
    """``target_date`` is missing or not a YYYY-MM-DD calendar date."""

    input = "target_date"


class LookbackDaysError(PredictionInputError):
    """``lookback_days`` is not an integer in the allowed range."""

    input = "lookback_days"


class WarehouseUnreachableError(PredictionInputError):
    """The warehouse location cannot be opened (missing directory, bad URI, no access)."""

    input = "warehouse"


class MissingSourceColumnError(PredictionInputError):
    """A source table lacks a column the feature query needs."""

    input = "warehouse"


class NoSourceDataError(PredictionInputError):
    """A source table (or a features partition) is absent or empty."""

    input = "warehouse"


class LateSourceDataError(NoSourceDataError):
    """The source has no rows yet for the day the run depends on: upstream data is late.

    Retryable, unlike the rest of ``NoSourceDataError``: a later try (Airflow's retry delay)
    may find the day loaded; a rerun after the data arrived recomputes the date.
    """

    permanent = False


class InvalidSourceDataError(PredictionInputError):
    """A source table holds rows the pipeline cannot use, such as a NULL user_id."""

    input = "warehouse"


class ModelUnreadableError(PredictionInputError):
    """``model_uri`` is empty or names no readable file (missing, no access)."""

    input = "model_uri"


class ModelDigestMismatchError(PredictionInputError):
    """The model file's sha256 differs from the expected one; it is not unpickled."""

    input = "model_sha256"


class ModelFeatureMismatchError(PredictionInputError):
    """The model expects features the pipeline does not produce."""

    input = "model_uri"


class ModelContractError(ModelFeatureMismatchError):
    """The model is not of a shape the pipeline scores (see "Model contract" in the README)."""


class ModelLoadError(PredictionInputError):
    """The model file's digest matched, but unpickling it failed (a missing library...)."""

    input = "model_uri"


class SourceUnavailableError(RuntimeError):
    """A source (warehouse, model store) failed in a way another try may not meet:
    a 5xx, a quota, a timeout, a refused connection. Not bad input: retryable."""

    permanent = False

    def __init__(self, message: str, *, input: str | None = None) -> None:
        super().__init__(message)
        self.input = input
