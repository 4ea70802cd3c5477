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


class PredictionsTableError(PredictionInputError):
    """``predictions_table`` is not a table name the pipeline may write (see ``schema``)."""

    input = "predictions_table"


class MinRowsError(PredictionInputError):
    """``min_rows`` is not a non-negative integer."""

    input = "min_rows"


class WarehouseInputError(PredictionInputError):
    """Base class: the ``warehouse`` (its location or the tables in it) is at fault."""

    input = "warehouse"


class WarehouseUnreachableError(WarehouseInputError):
    """The warehouse location cannot be opened (missing directory, bad URI, no access)."""


class MissingSourceColumnError(WarehouseInputError):
    """A source table lacks a column the feature query needs."""


class NoSourceDataError(WarehouseInputError):
    """A source table (or a features partition) is absent or empty."""


class LateSourceDataError(NoSourceDataError):
    """The source has no rows yet for the day the run depends on: upstream data is late.

    Retryable, unlike the rest of ``NoSourceDataError``: a later try (Airflow's retry delay)
    may find the day loaded; a rerun after the data arrived recomputes the date.
    """

    permanent = False


class TooFewRowsError(WarehouseInputError):
    """The run scored fewer users than its ``min_rows`` floor: the new partition is not
    published and the date's previous one stays (a short source, the same on every try)."""


class InvalidSourceDataError(WarehouseInputError):
    """A source table holds rows the pipeline cannot use, such as a NULL user_id."""


class ModelInputError(PredictionInputError):
    """Base class: the model ``model_uri`` names is at fault."""

    input = "model_uri"


class ModelUnreadableError(ModelInputError):
    """``model_uri`` is empty or names no readable file (missing, no access)."""


class ModelDigestMismatchError(PredictionInputError):
    """The model file's sha256 differs from the expected one; it is not unpickled."""

    input = "model_sha256"


class ModelFeatureMismatchError(ModelInputError):
    """The model expects features the pipeline does not produce."""


class ModelContractError(ModelFeatureMismatchError):
    """The model is not of a shape the pipeline scores (see "Model contract" in the README)."""


class ModelLoadError(ModelInputError):
    """The model file's digest matched, but unpickling it failed (a missing library...)."""


class SourceUnavailableError(RuntimeError):
    """A source (warehouse, model store) failed in a way another try may not meet:
    a 5xx, a quota, a timeout, a refused connection. Not bad input: retryable."""

    permanent = False

    def __init__(self, message: str, *, input: str | None = None) -> None:
        super().__init__(message)
        self.input = input
