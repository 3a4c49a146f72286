"""`secrets.get`: read a secret from the engine when the script needs it.

Secrets never reach the coordinator through environment variables. Each
call sends a `GetSecret` request, and the engine records every read as an
audit event, so the SDK keeps no copy.
"""

from __future__ import annotations

from . import _client
from ._validate import check_name
from .errors import EngineError, SecretError

__all__ = ["get"]


def get(key: str) -> str:
    """Return the value of the secret `key`.

    Raises:
        SecretError: no secret has that key, this job's pipeline may not
            read it, or its stored value cannot be decrypted. The message is
            the engine's.
        EngineError: the engine could not be reached or failed otherwise.
        TypeError, ValueError: `key` is not a non-empty string.
    """
    key = check_name(key, "secret key")
    client = _client.get_client()
    try:
        response = client.unary("GetSecret", client.messages.GetSecretRequest(key=key))
    except EngineError as error:
        reason = error.details or error.code
        # The engine's message already names the key and the fix.
        if error.code in ("NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"):
            raise SecretError(key, reason) from None
        if error.code == "PERMISSION_DENIED":
            raise SecretError(key, f"reading secret `{key}` was denied: {reason}") from None
        raise
    return str(response.value)
