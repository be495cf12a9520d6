"""Domain errors. Services raise these; transports map them in one place each
(app/api/http.py for REST, app/realtime for Socket.IO acks).

The `code` strings are part of the public contract: clients switch on them.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "error"
    status = 400
    default_message = "Request failed."

    def __init__(self, message: str | None = None, *, details: dict | None = None, **kw):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.details = details
        # Extra response headers (e.g. Retry-After) for HTTP.
        self.headers: dict[str, str] = kw.get("headers") or {}

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class Invalid(DomainError):
    code, status, default_message = "invalid", 400, "The request is not valid."


class Unauthorized(DomainError):
    code, status, default_message = "unauthorized", 401, "Authentication required."


class InvalidCredentials(DomainError):
    code, status, default_message = "invalid_credentials", 401, "Wrong login or password."


class InvalidCode(DomainError):
    code, status, default_message = "invalid_code", 400, "The code is wrong or has expired."


class Forbidden(DomainError):
    code, status, default_message = "forbidden", 403, "You are not allowed to do that."


class NotFound(DomainError):
    code, status, default_message = "not_found", 404, "Not found."


class Conflict(DomainError):
    code, status, default_message = "conflict", 409, "Conflicts with existing data."


class TooLarge(DomainError):
    code, status, default_message = "too_large", 413, "The request is too large."


class Stalled(DomainError):
    """The request body stopped arriving (HTTP_STALL_TIMEOUT)."""

    code, status, default_message = "request_timeout", 408, "The request body stopped arriving."

    def __init__(self, message: str | None = None):
        # What is left of the body is not worth waiting for: no keep-alive.
        super().__init__(message, headers={"Connection": "close"})


class RateLimited(DomainError):
    code, status, default_message = "rate_limited", 429, "Too many requests; slow down."

    def __init__(self, retry_after: float, message: str | None = None):
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(
            message, details={"retry_after": seconds}, headers={"Retry-After": str(seconds)}
        )


class Unavailable(DomainError):
    code, status, default_message = "unavailable", 503, "Service temporarily unavailable."


class Busy(DomainError):
    """Too much work queued (e.g. sends waiting for the message writer): nothing
    was done; retry after `retry_after` seconds (same client_msg_id)."""

    code, status, default_message = "busy", 503, "The server is busy; retry shortly."

    def __init__(self, retry_after: float = 1, message: str | None = None):
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(
            message, details={"retry_after": seconds}, headers={"Retry-After": str(seconds)}
        )


def conflict_on(field_name: str) -> Conflict:
    """409 whose code names the duplicated field, e.g. `email_taken`."""
    err = Conflict(f"That {field_name} is already in use.", details={"field": field_name})
    err.code = f"{field_name}_taken"
    return err


# --- contacts -------------------------------------------------------------------


class NotContact(DomainError):
    """The recipient does not have the sender as a contact (or refuses them for a
    reason we do not reveal, such as a block)."""

    code, status, default_message = "not_contact", 403, "You can only message your contacts."


class RequestRefused(DomainError):
    """A friend request that cannot be delivered. Deliberately says nothing about why."""

    code, status, default_message = "request_refused", 403, "This person cannot receive your request."


class RequestExpired(DomainError):
    code, status, default_message = "request_expired", 410, "This request has expired."


class AlreadyContact(DomainError):
    code, status, default_message = "already_contact", 409, "You are already contacts."


class YouBlocked(DomainError):
    """The caller blocked the other person; only the caller's own choice is revealed."""

    code, status, default_message = "blocked", 403, "You blocked this person; unblock them first."


# --- groups ---------------------------------------------------------------------


class GroupFull(DomainError):
    code, status, default_message = "group_full", 409, "The group is full."


class InviteExpired(DomainError):
    """An invite link that existed but can no longer be used (expired, used up,
    revoked, or its group was dissolved)."""

    code, status, default_message = "invite_expired", 410, "This invite link is no longer valid."


# --- sign-in with other providers ----------------------------------------------------


class OAuthFailed(DomainError):
    """A third-party sign-in that did not complete. `code` names the reason and is
    part of the contract (docs/api.md, "Sign in with other accounts")."""

    code, status, default_message = "oauth_failed", 400, "The sign-in did not complete."

    def __init__(self, code: str, message: str, *, status: int = 400,
                 details: dict | None = None):
        super().__init__(message, details=details)
        self.code = code
        self.status = status
