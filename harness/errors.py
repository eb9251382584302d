"""One exception family, so the CLI can print any user-facing error as one line without a traceback."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable


class HarnessError(Exception):
    """Base class: the message says what went wrong, where, and how to fix it."""


class UnknownNameError(HarnessError, KeyError):
    """A name that is not in a registry; the message lists close matches."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f"did you mean: {', '.join(close)}?" if close else f"known: {', '.join(known) or '(none)'}"
        super().__init__(f"unknown {kind} '{name}'; {hint}")
        self.kind, self.name, self.close = kind, name, close

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ConfigError(HarnessError):
    """A config file or value that does not validate; names the key."""


class DataMissingError(HarnessError):
    """A dataset that is not prepared, or a tree with a missing or malformed file."""


class WeightsMissingError(HarnessError):
    """Pretrained weights that are not present locally (offline); names the id and the fetch command.

    `weights`, `looked_in` and `fetch` repeat the message's parts for a table (a dry run lists what is missing);
    None when the message is all there is (a local path that does not exist).
    """

    def __init__(self, message: str, *, weights: str | None = None, looked_in: str | None = None,
                 fetch: str | None = None):
        super().__init__(message)
        self.weights, self.looked_in, self.fetch = weights, looked_in, fetch


class PluginError(HarnessError):
    """A plug-in entry point that cannot be loaded or has the wrong type."""


class WeightsError(HarnessError):
    """A weights file that exists but cannot be used: not a tensor file, a refused pickle, another architecture."""


def warn(message: str) -> None:
    """A one-line warning on stderr (what went wrong and what the harness did about it); work goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
