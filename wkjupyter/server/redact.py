"""Secrets cut out of every logged URL: link tokens, credential query parameters, passwords.

Link tokens (``wkjupyter/links/<token>/``) become ``<token>``. Query parameters whose name
says they carry a credential get the value ``[secret]``, as Jupyter's ``log_request`` does
(``jupyter_server/log.py``), with more names and case-insensitively: Jupyter's own
``?token=`` reaches ``wkjupyter serve`` through JupyterLab's launcher (jupyter-server-proxy
forwards the query string), and signed storage URLs carry ``X-Amz-Signature`` or
``X-Goog-Credential``. A password in a URL's user info becomes ``[secret]`` too.

The handlers redact the request line they log; :class:`RedactSecrets` redacts every record of
the loggers that log request lines or URLs (tornado's, Jupyter's, ours), which catches what
other code logs: tornado's 404 for an unmatched path, its warnings that quote the request.
"""

from __future__ import annotations

import logging
import re

__all__ = ["SECRET", "RedactSecrets", "redact_request_logs", "redact_uri"]

#: What a redacted query value reads as (Jupyter's word).
SECRET = "[secret]"

# Also with doubled slashes, which reach no route but are still logged (tornado's 404).
_LINK_IN_PATH = re.compile(r"(wkjupyter/+links/+)[^/?#\s\"']+")
_NAME = r"[^=&;\s#\"'?]*"
# Jupyter scrubs names containing token, auth, key, code, state or xsrf; add passwords,
# secrets, signatures, credentials, sessions, and every AWS / GCS signing parameter.
_SECRET_PARAM = re.compile(
    rf"([?&;](?:{_NAME}(?:token|auth|key|secret|passw|pwd|sig|credential|session|code|state"
    rf"|xsrf){_NAME}|x-(?:amz|goog)-{_NAME})=)[^&;\s#\"']*",
    re.IGNORECASE,
)
_PASSWORD_IN_URL = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^/\s@:\"'<>]*:[^/\s@\"'<>]*@", re.I)


def redact_uri(text: str) -> str:
    """``text`` (a URL, a request line, a log message) with its secrets replaced."""
    if "?" not in text and "@" not in text and ";" not in text and "links" not in text:
        return text  # nothing any pattern below could match: most chunk requests
    text = _LINK_IN_PATH.sub(r"\1<token>", text)
    text = _SECRET_PARAM.sub(rf"\1{SECRET}", text)
    return _PASSWORD_IN_URL.sub(rf"\1{SECRET}@", text)


class RedactSecrets(logging.Filter):
    """Redacts every record of the logger it is added to (see :func:`redact_uri`).

    A logger's filters see only the records logged on it, not those of its children, so it
    is added to each logger that logs URLs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_uri(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTING = RedactSecrets()
_LOGGERS = ("tornado.access", "tornado.general", "tornado.application", "wkjupyter.server")


def redact_request_logs(*loggers: logging.Logger) -> None:
    """Add :class:`RedactSecrets` to tornado's loggers, ours and ``loggers`` (idempotent)."""
    for logger in (*map(logging.getLogger, _LOGGERS), *loggers):
        if _REDACTING not in logger.filters:
            logger.addFilter(_REDACTING)
