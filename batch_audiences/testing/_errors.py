"""The one exception the emulator's API logic raises to answer with a JSON error."""

from __future__ import annotations


class ApiError(Exception):
    """An API error answer: ``status`` with ``{"error_code": code, "error_message": message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, str]:
        """The JSON error body."""
        return {"error_code": self.code, "error_message": self.message}


def bad_request(message: str, code: str = "INVALID_PARAMETER") -> ApiError:
    """A 400 naming the faulty field in ``message``."""
    return ApiError(400, code, message)
