"""Errors the user can fix, as opposed to bugs.

Every exception scaledet raises on purpose about something the user gave it (a config, an
option, a data file, an image, a checkpoint, an export that does not verify) derives from
:class:`ScaledetError`. Its message is complete on its own first line and names the file or
option at fault; the command line prints that line alone. Any other exception escaping a
command is a bug, and the command line says so (docs/CONTRACTS.md, "Errors").

Each class also derives from the built-in exception that callers caught before it existed
(``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError`` keeps working.
"""
from __future__ import annotations


class ScaledetError(Exception):
    """Base of all user errors: the message says what is wrong and where."""


class UsageError(ScaledetError, ValueError):
    """A bad argument or option value, or a combination of them that cannot work."""


class ModelArgumentError(ScaledetError, TypeError):
    """A model builder was given an argument it does not take."""


class UnknownModelError(ScaledetError, KeyError):
    """No model is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingFileError(ScaledetError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class DataError(ScaledetError, ValueError):
    """A data file (image, annotations, records) that exists but cannot be used."""


class CheckpointError(ScaledetError, RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


class ExportError(ScaledetError, RuntimeError):
    """The requested export cannot be produced faithfully."""


class TrainingError(ScaledetError, RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); what was saved is kept."""


class OutputError(ScaledetError, OSError):
    """An output cannot be written where asked: it would replace something the user has, the
    folder belongs to another run, or the file system refused the write."""


class DiskFullError(OutputError):
    """The device ran out of space while writing; the previous file at that path is intact."""
