"""The auth service's request and response bodies.

Requests refuse unknown fields (a client sending ``role`` learns that it cannot
choose one, rather than being silently ignored). Text that PostgreSQL or
argon2 could not take (NUL, lone surrogates) is refused here, with 422, before
it reaches either.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
import uuid
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator

from nexanest.services.tokens import Role

#: NIST SP 800-63B-4: at least 15 characters where the password is the only
#: factor; a bound above so that no request makes the server hash megabytes.
PASSWORD_MIN_CHARS = 15
PASSWORD_MAX_CHARS = 256


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def _printable(value: str) -> str:
    if any(unicodedata.category(c) in {"Cc", "Cs"} for c in value):
        raise ValueError("must not contain control characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


#: A password being set: the length bounds apply.
NewPassword = Annotated[
    str, Field(min_length=PASSWORD_MIN_CHARS, max_length=PASSWORD_MAX_CHARS), AfterValidator(_encodable)
]
#: A password being checked: any length up to the bound (an older rule may have allowed a shorter one).
GivenPassword = Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX_CHARS), AfterValidator(_encodable)]
Email = Annotated[EmailStr, Field(max_length=254)]
DisplayName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)]


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
    new_password: NewPassword

    @model_validator(mode="after")
    def _new_differs(self) -> Self:
        if self.new_password == self.current_password:
            raise ValueError("the new password must differ from the current one")
        return self


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
