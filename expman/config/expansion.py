"""The expand stage: each validated trial entry becomes the entries it stands for.

An :class:`Expander` maps one :class:`~expman.config.entries.TrialEntry` to one or
more entries (a sweep's ``grid`` would make one per value). The plan builder walks
a sequence of expanders: each entry goes through the first, each of its outputs
through the second, and so on, in order. The built-in sequence,
:data:`DEFAULT_EXPANDERS`, holds only :func:`unchanged`: an entry stands for itself
(a trial's ``repeat`` becomes runs later, in the resolve stage).

Then the plan-wide checks, over what the entries expanded to: every generated entry
is checked again like a written one (:func:`~expman.config.entries.check_entry`),
trial names and ids are unique, at least one trial remains, and the plan stays
within :data:`MAX_RUNS` runs, counted as entries come out of the expanders (so a
huge sweep is refused before it is built). A generated entry keeps the source of
the entry it came from; the walk marks it with its trial name, so its errors name
the file and line of the original key and which generated trial they are about.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from expman.config.entries import EntrySource, TrialEntry, check_entry

#: The most runs one plan may hold (every run is a RunSpec in memory before anything runs).
MAX_RUNS = 1_000_000


class Expander(Protocol):
    """Maps one trial entry to the entries it stands for, in plan order.

    The contract:

    - Return (or yield) :class:`TrialEntry` objects; the walk consumes them once and
      lazily, stopping when the plan passes :data:`MAX_RUNS` runs.
    - Return ``(entry,)``, the very object, for an entry the expander does not apply
      to; an entry it returns unchanged is not checked again.
    - Make generated entries with :func:`dataclasses.replace` on the given one, so they
      keep its ``source``; give each a name and an id of its own (both must be unique).
    - Expect every generated entry to be checked like one written in ``trials.yaml``;
      raise the entry's own :meth:`TrialEntry.error` for a mistake in what it holds
      (a sweep's ``grid`` that is not a list).
    - Only an expander whose ``checks_entries`` attribute is ``True`` is trusted to
      have made every entry as :func:`~expman.config.entries.check_entry` would (its
      source marked with its name, its name checked): the sweep expander, which makes
      100,000 entries from one checked entry and saves the walk a check of each.
    """

    def __call__(self, entry: TrialEntry, /) -> Iterable[TrialEntry]: ...


def unchanged(entry: TrialEntry) -> tuple[TrialEntry]:
    """The identity expander: an entry stands for itself."""
    return (entry,)


#: The expanders the plan builder walks unless told otherwise.
DEFAULT_EXPANDERS: tuple[Expander, ...] = (unchanged,)


def expand_entry(entry: TrialEntry, expanders: Sequence[Expander]) -> Iterator[TrialEntry]:
    """The entries ``entry`` stands for, through every expander in turn (lazily)."""
    entries: Iterable[TrialEntry] = (entry,)
    for expander in expanders:
        entries = _through(expander, entries)
    return iter(entries)


def _through(expander: Expander, entries: Iterable[TrialEntry]) -> Iterator[TrialEntry]:
    vouched = getattr(expander, "checks_entries", False) is True
    for entry in entries:
        for out in expander(entry):
            yield out if out is entry or vouched else _checked(out, expander)


def _checked(generated: object, expander: Expander) -> TrialEntry:
    """A generated entry checked like a written one, its source marked with its name."""
    if not isinstance(generated, TrialEntry):
        raise TypeError(
            f"expander {expander!r} returned {type(generated).__name__}; expected TrialEntry"
        )
    source = EntrySource(generated.source.doc, generated.source.key, str(generated.name))
    return check_entry(source, generated.as_yaml(), swept=generated.swept)


def expand_entries(
    entries: Iterable[TrialEntry], expanders: Sequence[Expander] = DEFAULT_EXPANDERS
) -> tuple[TrialEntry, ...]:
    """Every entry expanded, in order, with names and ids unique and runs within MAX_RUNS."""
    names: dict[str, EntrySource] = {}
    ids: dict[str, EntrySource] = {}
    expanded: list[TrialEntry] = []
    total_runs = 0
    first: TrialEntry | None = None
    for written in entries:
        first = first or written
        for entry in expand_entry(written, expanders):
            if entry.name in names:
                other = names[entry.name]
                also = f"generated from trial {other.key}" if other.generated else other.key
                hint = "; a sweep's name template must tell its points apart"
                both = entry.source.generated and other.generated
                raise entry.error(
                    "sweep.name" if both and _has_template(written) else "name",
                    f"duplicate trial name {entry.name!r} (also trial {also})"
                    + (hint if both else ""),
                )
            if entry.id in ids:
                raise entry.error(
                    "id", f"duplicate trial id {entry.id!r} (also trial {ids[entry.id].key})"
                )
            names[entry.name] = ids[entry.id] = entry.source
            total_runs += entry.repeat
            if total_runs > MAX_RUNS:
                raise entry.error(
                    "repeat",
                    f"repeat {entry.repeat} brings the plan to {total_runs:,} runs;"
                    f" expected at most {MAX_RUNS:,} runs in total",
                )
            expanded.append(entry)
    if first is not None and not expanded:
        raise first.source.doc.error("", "expected at least one trial; the entries expand to none")
    return tuple(expanded)


def _has_template(entry: TrialEntry) -> bool:
    """Whether ``entry`` (as written) names its sweep's trials by a template."""
    return entry.sweep is not None and "name" in entry.sweep
