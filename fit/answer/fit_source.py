"""A fit.json as a LawSource for the answering side: its laws, bootstrap samples, N convention, and flags.

Presets (fit.answer.presets) carry none of the flags or caveats; a FitSource does, so an answer can say
what the fit behind it could not identify.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fit.answer.caveats import fit_flags, flag_warnings, pooled_warning, unchecked_warning
from fit.answer.presets import FormatLaw, LawSource
from fit.answer.query import check_law
from fit.fitfile import FitFile

# the N column a table named, when fit.json does not say which parameters N counts
N_COLUMN_CONVENTION = {"N": "quant", "N_quant": "quant", "N_nonembed": "nonembed", "N_total": "total"}


@dataclass(frozen=True)
class FitSource(LawSource):
    """A LawSource read from fit.json, which also knows each fit's flags."""

    flags: dict[str, list[str]] = field(default_factory=dict)
    caveats: tuple[str, ...] = ()  # about the fit as a whole (e.g. formats pooled without --by format)
    data_ranges: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # fit.json's

    def flags_for(self, fmt: str) -> list[str]:
        return self.flags.get(fmt, self.flags.get("all", []))


def warnings_for(source: LawSource, fmt: str) -> list[str]:
    """The ``warning:`` lines of an answer about ``fmt``: the serving fit's flags, then the caveats."""
    if not isinstance(source, FitSource):
        return []
    name = fmt if fmt in source.flags else "all"
    return flag_warnings({name: source.flags_for(fmt)}) + list(source.caveats)


def source_from_fit(fitfile: FitFile) -> LawSource:
    """A fit.json as a LawSource: every fit entry, its bootstrap samples, and the N convention it used."""
    check_law(fitfile.law, str(fitfile.path), fitfile.params(fitfile.formats[0]))
    data = fitfile.data
    column = str((data.get("columns") or {}).get("N", "N"))
    # fit.json says quant|nonembed|total, or that N came as given from a column (then its name decides).
    convention = str(data.get("n_convention"))
    if convention not in ("quant", "nonembed", "total"):
        convention = N_COLUMN_CONVENTION.get(column, "quant")
    laws, ranges, spans = {}, {}, {}
    for fmt in fitfile.formats:
        laws[fmt] = FormatLaw(fmt, fitfile.params(fmt), fitfile.bootstrap_samples(fmt))
        entry = fitfile.entry(fmt)
        p_range = entry.get("P_range") or (entry.get("data_range") or {}).get("P")
        if isinstance(p_range, list | tuple) and len(p_range) == 2:
            ranges[fmt] = (float(p_range[0]), float(p_range[1]))
        spans[fmt] = {k: (float(v[0]), float(v[1])) for k, v in (entry.get("data_range") or {}).items()}
    caveats = tuple(unchecked_warning(fitfile) + pooled_warning(fitfile))
    return FitSource(
        str(fitfile.path), laws, convention, p_range=ranges, flags=fit_flags(fitfile), caveats=caveats,
        data_ranges=spans,
    )
