"""The one redactor: every text we show (errMsg, rawValue, Events, logs, API and gRPC error
bodies) passes through it before it is cut to length or leaves the process.

It knows each form in which this server itself sends a credential: the value, base64 (and
the Basic-auth base64 of every `user:password` pair of the Secret's values), JSON-escaped,
URL-encoded (both hex cases, `+` for spaces), and whatever header values a provider built
from them (`Redactor.extended`). Forms are also masked when an excerpt cut them short: a
run of at least `PREFIX_ANCHOR` characters that starts a form is masked as far as it
matches. On top of the known values, URL userinfo and anything after an
`Authorization`-like header name are masked too (backends echo requests in error pages).

`REGISTRY` is the explicit, process-wide cache of the redactors of live providers: the
logging filter (metrics_server.logsetup) applies all of them to every record, so a
library's log line cannot carry a provider's credential either.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"
MIN_SECRET_LEN = 3  # shorter values would mask ordinary text (and are not credentials)
PREFIX_ANCHOR = 8  # a cut-off form is still masked when at least this much of it is left
MAX_PAIR_VALUES = 16  # Basic-auth pairs are built from at most this many values (n^2 forms)

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_CREDENTIAL_HEADER = re.compile(
    r"(?i)(?P<name>\b(?:proxy-)?authorization|\bapi-token|\bx-api-key|\bapikey|\bapi-key|\bdd-api-key"
    r"|\bdd-application-key|\bx-auth-token|\bcookie|\bset-cookie"
    r"|\b(?:access_|refresh_|id_)?token|\bpassword|\bclient_secret)"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<scheme>(?:basic|bearer|api-token|token|negotiate|digest)\s+)?"
    r"(?P<value>[^\s\"',;&]+)"
)
# a token after "Bearer"/"Basic" (one with a digit or base64 punctuation: not prose like "Basic auth")
_BEARER = re.compile(
    r"(?i)\b(?P<scheme>bearer|basic)(?P<sep>\s+)"
    r"(?P<value>(?=[A-Za-z0-9+/=._~-]*[0-9+/=_])[A-Za-z0-9+/=._~-]{8,})"
)


def _case_variants(encoded: str) -> set[str]:
    return {encoded, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)}


def secret_forms(value: str) -> set[str]:
    """Every form in which `value` may appear in text we received back from a backend."""
    raw = value.encode("utf-8", errors="surrogateescape")
    b64 = base64.b64encode(raw).decode()
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        b64,
        b64.rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        *_case_variants(quote(value, safe="")),
        *_case_variants(quote_plus(value, safe="")),
        *_case_variants(quote(value, safe="/:")),
    }
    return {f for f in forms if len(f) >= MIN_SECRET_LEN}


def _basic_forms(values: list[str]) -> set[str]:
    """base64("a:b") for every ordered pair: the Authorization header of Basic auth."""
    out: set[str] = set()
    for user, password in itertools.permutations(values[:MAX_PAIR_VALUES], 2):
        token = base64.b64encode(f"{user}:{password}".encode("utf-8", errors="surrogateescape")).decode()
        out |= {token, token.rstrip("=")}
    return out


def credential_values(secrets: Iterable[str]) -> list[str]:
    """The values worth masking: each stripped value, and each long word of multi-word values."""
    out: list[str] = []
    for text in secrets:
        if not text:
            continue
        stripped = text.strip()
        if len(stripped) >= MIN_SECRET_LEN:
            out.append(stripped)
        out.extend(part for part in text.split() if len(part) >= 6 and part != stripped)
    return list(dict.fromkeys(out))


class Redactor:
    """Masks a fixed set of credentials in every known form; immutable, cheap to call."""

    def __init__(self, secrets: Iterable[str] = (), *, extra_forms: Iterable[str] = ()) -> None:
        self.values = credential_values(secrets)
        forms: set[str] = set()
        for value in self.values:
            forms |= secret_forms(value)
        forms |= _basic_forms(self.values)
        forms |= {f for f in extra_forms if len(f) >= MIN_SECRET_LEN}
        self._forms = sorted(forms, key=len, reverse=True)
        self._anchors: dict[str, list[str]] = {}
        for form in self._forms:
            if len(form) >= PREFIX_ANCHOR:
                self._anchors.setdefault(form[:PREFIX_ANCHOR], []).append(form)
        short = [f for f in self._forms if len(f) < PREFIX_ANCHOR]
        self._short = re.compile("|".join(map(re.escape, short))) if short else None

    def extended(self, secrets: Iterable[str] = (), forms: Iterable[str] = ()) -> Redactor:
        """A redactor that also knows `secrets` (all forms) and literal `forms` (e.g. header values)."""
        return Redactor([*self.values, *secrets], extra_forms=[*self._forms, *forms])

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __call__(self, text: str) -> str:
        if self._forms and text:
            text = self._mask_known(text)
        text = _URL_USERINFO.sub(rf"\g<scheme>{MASK}@", text)
        text = _CREDENTIAL_HEADER.sub(lambda m: f"{m['name']}{m['sep']}{m['scheme'] or ''}{MASK}", text)
        return _BEARER.sub(lambda m: f"{m['scheme']}{m['sep']}{MASK}", text)

    def bytes(self, raw: bytes) -> bytes:
        """The same for a backend's raw answer (rawValue): non-UTF-8 bytes pass unchanged."""
        if not raw:
            return raw
        text = raw.decode("utf-8", errors="surrogateescape")
        masked = self(text)
        return raw if masked == text else masked.encode("utf-8", errors="surrogateescape")

    def excerpt(self, text: str, limit: int) -> str:
        """Redact, then put on one line and cut to `limit` characters (never the other way round)."""
        text = " ".join(self(text).split())
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def _mask_known(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        for anchor, forms in self._anchors.items():
            start = text.find(anchor)
            while start != -1:
                spans.append((start, start + max(_common_prefix(text, start, f) for f in forms)))
                start = text.find(anchor, start + 1)
        if self._short is not None:
            spans.extend(m.span() for m in self._short.finditer(text))
        if not spans:
            return text
        spans.sort()
        out, pos = [], 0
        for start, end in spans:
            if end <= pos:
                continue
            if start < pos:
                start = pos
            else:
                out.append(text[pos:start])
                out.append(MASK)
            pos = end
        out.append(text[pos:])
        return "".join(out)


def _common_prefix(text: str, start: int, form: str) -> int:
    n = 0
    limit = min(len(form), len(text) - start)
    while n < limit and text[start + n] == form[n]:
        n += 1
    return n


NO_SECRETS = Redactor()


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """One-off redaction of `text` (build a Redactor once where the secrets are reused)."""
    return Redactor(secrets)(text)


class RedactorRegistry:
    """The redactors of live providers, by provider; what the logging filter applies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # logging may run in SDK threads
        self._by_owner: dict[str, Redactor] = {}

    def put(self, owner: str, redactor: Redactor) -> None:
        with self._lock:
            if redactor:
                self._by_owner[owner] = redactor
            else:
                self._by_owner.pop(owner, None)

    def drop(self, owner: str) -> None:
        with self._lock:
            self._by_owner.pop(owner, None)

    def __call__(self, text: str) -> str:
        with self._lock:
            redactors = list(self._by_owner.values())
        for r in redactors:
            text = r._mask_known(text) if r else text
        return NO_SECRETS(text)


REGISTRY = RedactorRegistry()
