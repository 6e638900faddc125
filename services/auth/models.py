"""The auth service's request and response bodies.

Every rule a field has is one its JSON schema states (a length, a pattern), so
that whatever the OpenAPI document admits is accepted and the rest refused with
422: schemathesis holds the service to that. Requests refuse unknown fields (a
client sending ``role`` learns that it cannot choose one, rather than being
silently ignored). Text that PostgreSQL or argon2 could not take (NUL, lone
surrogates) is refused here, before it reaches either.

An email is checked against ``EMAIL_PATTERN``: ASCII, a local part of the
characters RFC 5322 allows unquoted, and a domain of at least two labels with a
letters-only top level. Nothing checks that mail reaches it (the service sends
none); the database compares emails case-insensitively.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from nexanest.services.tokens import Role

#: NIST SP 800-63B-4: at least 15 characters where the password is the only
#: factor; a bound above so that no request makes the server hash megabytes.
PASSWORD_MIN_CHARS: Final = 15
PASSWORD_MAX_CHARS: Final = 256
EMAIL_MAX_CHARS: Final = 254  # RFC 5321's limit on a path, less the angle brackets
EMAIL_PATTERN: Final = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
#: No control characters (C0, DEL, C1): a name is shown to people and written to logs.
DISPLAY_NAME_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]+$"


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


#: A password being set: the length bounds apply.
NewPassword = Annotated[
    str, Field(min_length=PASSWORD_MIN_CHARS, max_length=PASSWORD_MAX_CHARS), AfterValidator(_encodable)
]
#: A password being checked: any length up to the bound (an older rule may have allowed a shorter one).
GivenPassword = Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX_CHARS), AfterValidator(_encodable)]
Email = Annotated[str, Field(max_length=EMAIL_MAX_CHARS, pattern=EMAIL_PATTERN)]
DisplayName = Annotated[
    str, Field(min_length=1, max_length=100, pattern=DISPLAY_NAME_PATTERN), AfterValidator(_encodable)
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Request):
    email: Email
    password: NewPassword
    display_name: DisplayName


class LoginRequest(_Request):
    email: Email
    password: GivenPassword


class PasswordChangeRequest(_Request):
    current_password: GivenPassword
    #: May equal the current one: the change still ends every session.
    new_password: NewPassword


class AccessToken(BaseModel):
    """An access token, to send as ``Authorization: Bearer <access_token>``."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth 2.0 token type, no secret
    #: Seconds until the token expires unless used; each use extends it (up to
    #: the session's absolute lifetime).
    expires_in: int = Field(ge=0)


class User(BaseModel):
    """A user as the user sees themself (never the password hash)."""

    user_id: uuid.UUID
    email: str
    display_name: str
    role: Role
    created_at: dt.datetime
