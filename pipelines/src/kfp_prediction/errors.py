"""Errors for bad input. Each names the thing that is wrong; none is raised after a write."""


class PredictionInputError(ValueError):
    """Base class: the run cannot proceed with these inputs; nothing was written."""


class TargetDateError(PredictionInputError):
    """``target_date`` is missing or not a YYYY-MM-DD calendar date."""


class WarehouseUnreachableError(PredictionInputError):
    """The warehouse location cannot be opened (missing directory, bad URI, no access)."""


class MissingSourceColumnError(PredictionInputError):
    """A source table lacks a column the feature query needs."""


class NoSourceDataError(PredictionInputError):
    """A source table holds no rows for the date the run depends on."""


class InvalidSourceDataError(PredictionInputError):
    """A source table holds rows the pipeline cannot use, such as a NULL user_id."""


class ModelDigestMismatchError(PredictionInputError):
    """The model file's sha256 differs from the expected one; it is not unpickled."""


class ModelFeatureMismatchError(PredictionInputError):
    """The model expects features the pipeline does not produce."""


class ModelContractError(ModelFeatureMismatchError):
    """The model is not of a shape the pipeline scores (see "Model contract" in the README)."""


class ModelLoadError(PredictionInputError):
    """The model file's digest matched, but unpickling it failed (a missing library...)."""
