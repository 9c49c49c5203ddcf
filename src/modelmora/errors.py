"""Errors that reach the user.

Every failure a user can cause or fix is a :class:`ModelMoraError`: the CLI prints its
message (no traceback) and exits with its ``exit_code``. Exit codes are part of the
public contract so that scripts can trust them:

* ``0`` success
* ``1`` the operation ran and failed, or a check found drift (``lock --check``)
* ``2`` bad input: manifest, lock, command-line usage, unknown source, missing env var
"""

from __future__ import annotations


class ModelMoraError(Exception):
    """A failure with a message meant for the user."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UserInputError(ModelMoraError):
    """The user's input (manifest, lock, arguments) is wrong; exit code 2."""

    exit_code = 2


class ManifestError(UserInputError):
    """``modelmora.yml`` cannot be read, interpolated or validated."""


class LockFileError(UserInputError):
    """``modelmora.lock`` is corrupt, hand-edited into an invalid state, or from the future."""


class SourceError(ModelMoraError):
    """A registry could not resolve or deliver a model (not found, auth, network)."""


class SourceNotFoundError(SourceError):
    """The repository, revision or file does not exist; exit code 2 (the spec is wrong)."""

    exit_code = 2


class AuthenticationError(SourceError):
    """The registry refused the credentials (or their absence); exit code 2."""

    exit_code = 2


class IntegrityError(ModelMoraError):
    """Bytes did not match the size or sha256 the lock promised."""
