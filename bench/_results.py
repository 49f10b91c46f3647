"""Recording into ``bench/RESULTS.md``: each benchmark script owns one ``## `` section."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def record_section(heading: str, lines: list[str]) -> None:
    """Replace the section starting with ``heading`` by ``lines`` (or append it)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    start = text.find(heading)
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + "\n".join(lines) + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + "\n".join(lines)
    RESULTS.write_text(text)
