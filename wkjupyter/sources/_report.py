"""What :func:`~wkjupyter.sources.explore.explore` found, and every attempt it made.

A report that found nothing is falsy, and asking it for its data source raises
:class:`~wkjupyter.errors.NothingFoundError` with the telling failure as cause and remedy,
so ``report.datasource.layers[...]`` never ends in a ``NoneType`` error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from wkjupyter.errors import NothingFoundError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from wkjupyter.datasource import DataSource

__all__ = ["ExploreReport", "ExploreStep", "Outcome"]

Outcome = Literal["ok", "no match", "failed"]


@dataclass(frozen=True, slots=True)
class ExploreStep:
    """One attempt: which format was tried at which URL, and what came of it."""

    url: str
    format: str
    outcome: Outcome
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class ExploreReport:
    """What :func:`~wkjupyter.explore` found (``datasource``) and how (``steps``).

    A report is true when it found a data source. Reading :attr:`datasource` of one that
    found nothing raises :class:`~wkjupyter.errors.NothingFoundError`, so check first::

        report = wkj.explore(url)
        if not report:
            print(report)  # every attempt: url, format, ok / no match / failed
    """

    def __init__(self, datasource: DataSource | None, steps: Iterable[ExploreStep] = ()) -> None:
        self._datasource = datasource
        self.steps: list[ExploreStep] = list(steps)

    @property
    def ok(self) -> bool:
        """Whether a data source was found."""
        return self._datasource is not None

    def __bool__(self) -> bool:
        return self.ok

    @property
    def errors(self) -> list[ExploreStep]:
        """The failed steps."""
        return [s for s in self.steps if s.outcome == "failed"]

    @property
    def datasource(self) -> DataSource:
        """The data source found.

        Raises
        ------
        NothingFoundError
            Nothing was found; the message gives the telling failure and what to do, and
            ``err.report`` is this report.
        """
        if self._datasource is None:
            raise self._nothing_found("found no dataset")
        return self._datasource

    def require_datasource(self) -> DataSource:
        """The data source to import: :attr:`datasource`, with "nothing to import" errors."""
        if self._datasource is None:
            raise self._nothing_found("nothing to import: found no dataset")
        return self._datasource

    def _nothing_found(self, head: str) -> NothingFoundError:
        """Two lines: the first failure (the cause), then its remedy and where the rest is."""
        failures = self.errors
        cause, remedy = _cause_and_remedy(failures[0].message) if failures else ("", "")
        cause = cause or "no format matched"
        if len(failures) > 1:
            cause += f" (and {len(failures) - 1} more failure(s))"
        listing = f"print(err.report) lists every attempt ({len(self.steps)})"
        msg = f"{head}: {cause}\n{remedy + '; ' if remedy else ''}{listing}"
        return NothingFoundError(msg, self)

    def __str__(self) -> str:
        ds = self._datasource
        lines = [f"found {len(ds.layers)} layer(s)" if ds is not None else "found no dataset"]
        lines += [
            f"  [{s.outcome}] {s.format} at {s.url}" + (f": {s.message}" if s.message else "")
            for s in self.steps
        ]
        if ds is not None:
            lines.append(repr(ds))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ExploreReport(ok={self.ok}, steps={len(self.steps)})\n{self}"


def _cause_and_remedy(message: str) -> tuple[str, str]:
    """Split a step message "what failed (details); what to do" at its last top-level "; ".

    Step messages end in their remedy after "; " (``translate_error``'s and explore's own);
    one without a top-level "; " is all cause.
    """
    depth, split = 0, -1
    for i, char in enumerate(message):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(char, 0)
        if depth == 0 and message.startswith("; ", i):
            split = i
    if split < 0:
        return message, ""
    return message[:split], message[split + 2 :]
