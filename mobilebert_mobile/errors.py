"""One error family. Every error the SDK raises on purpose derives from ``MobileBertMobileError``;
each area has its subclass (defined here, or next to its code as a subclass of one of these).

The CLI and the HTTP server map error *types* to exit codes and statuses (``exit_code`` and
``http_status`` below), never message text. The areas also keep the built-in base they always had
(``ValueError`` for bad input, ``RuntimeError`` for a failed stage), so ``except ValueError`` in
callers still works.
"""
from __future__ import annotations


class MobileBertMobileError(Exception):
    """Base of every error this SDK raises on purpose; its message names the problem."""

    exit_code = 2       # CLI exit status
    http_status = 400   # HTTP status when a request caused it


class InputError(MobileBertMobileError, ValueError):
    """A caller's input is malformed (texts, files, options)."""


class UnsupportedError(MobileBertMobileError, ValueError):
    """Well-formed input that this model cannot serve (e.g. embeddings from a classifier)."""

    http_status = 422


class StageError(MobileBertMobileError, RuntimeError):
    """A stage (conversion, training, a benchmark) could not complete."""

    http_status = 500


# ------------------------------------------------------------------ per area
class ConfigError(InputError):
    """A config.json or preset is malformed."""


class TokenizerError(InputError):
    """A vocabulary or a text cannot be tokenized."""


class AssetError(MobileBertMobileError, RuntimeError):
    """An offline asset (vocabulary, weights, text package) is not installed."""


class CheckpointError(InputError):
    """A checkpoint directory is missing, malformed, or does not fit the model."""


class BundleError(InputError):
    """A bundle is missing, malformed, escapes its folder, or does not match its hashes."""


class PredictorError(InputError):
    """Bad input to the Predictor, or a model it cannot load."""


class TaskMismatchError(PredictorError, UnsupportedError):
    """The method needs a model of another task."""


class CalibrationError(InputError):
    """A text file is missing, empty, not UTF-8, or has no text column."""


class ConversionError(StageError):
    """A conversion stage failed or disagreed with its source."""


def exit_code(e: BaseException) -> int | None:
    """The CLI exit status for an error of ours (None: not ours, a bug to show in full)."""
    return e.exit_code if isinstance(e, MobileBertMobileError) else None


def http_status(e: BaseException) -> int:
    return e.http_status if isinstance(e, MobileBertMobileError) else 500
