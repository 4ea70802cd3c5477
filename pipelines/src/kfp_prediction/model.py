"""The pickled model: fetch bytes, verify sha256, only then unpickle (its shape: ``scoring``).

A pickle executes code when loaded, so the digest is computed over the very bytes that are
unpickled (no second read that could differ) and compared before ``pickle.loads``.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from typing import Any

from kfp_prediction.errors import (
    ModelDigestMismatchError,
    ModelLoadError,
    ModelUnreadableError,
    SourceUnavailableError,
)
from kfp_prediction.paths import resolve_local_path

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def read_model_bytes(model_uri: str) -> bytes:
    """Bytes of the model at a local path, ``file://`` or ``gs://`` URI."""
    if not isinstance(model_uri, str) or not model_uri.strip():
        raise ModelUnreadableError("model_uri is required")
    if model_uri.startswith("gs://"):
        from google.api_core import exceptions as gexc
        from google.cloud import storage

        bucket, _, name = model_uri.removeprefix("gs://").partition("/")
        try:
            return storage.Client().bucket(bucket).blob(name).download_as_bytes()
        except (gexc.NotFound, gexc.Forbidden, gexc.Unauthorized, gexc.BadRequest) as exc:
            raise ModelUnreadableError(f"model_uri {model_uri!r} cannot be read: {exc}") from exc
        except Exception as exc:  # 5xx, timeouts, refused connections: another try may work
            raise SourceUnavailableError(
                f"model_uri {model_uri!r} could not be fetched: {exc}", input="model_uri"
            ) from exc
    path = resolve_local_path(model_uri)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelUnreadableError(f"model_uri {model_uri!r} cannot be read: {exc}") from exc


def normalize_sha256(expected: str) -> str:
    value = (expected or "").strip().lower()
    if not _SHA256_RE.match(value):
        raise ModelDigestMismatchError(
            f"model_sha256 must be 64 hexadecimal characters, got {expected!r}"
        )
    return value


def verify_model_bytes(data: bytes, expected_sha256: str, model_uri: str) -> str:
    """Return the digest if it matches the expected one, else refuse with both digests."""
    expected = normalize_sha256(expected_sha256)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelDigestMismatchError(
            f"model {model_uri!r} has sha256 {actual}, expected {expected}; refusing to unpickle"
        )
    return actual


def read_verified_model(model_uri: str, expected_sha256: str) -> tuple[bytes, str]:
    """The model's bytes and digest, once the digest matched: only these may be unpickled."""
    data = read_model_bytes(model_uri)
    return data, verify_model_bytes(data, expected_sha256, model_uri)


def unpickle_model(data: bytes, model_uri: str, digest: str) -> Any:
    """The model object of verified bytes (``read_verified_model``)."""
    try:
        return pickle.loads(data)
    except Exception as exc:  # a library the image lacks, a pickle of another version...
        raise ModelLoadError(
            f"model {model_uri!r} (sha256 {digest}) cannot be unpickled: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def load_verified_model(model_uri: str, expected_sha256: str) -> tuple[Any, str]:
    """Unpickle the model only after its digest matched; returns (model, digest)."""
    data, digest = read_verified_model(model_uri, expected_sha256)
    return unpickle_model(data, model_uri, digest), digest
