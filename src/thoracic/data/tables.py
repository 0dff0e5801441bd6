"""Fast, checked reading of the metadata tables: text columns and CSVs, with errors that name the file, row
and column.

pandas' string methods (``Series.str.strip()`` and the like) cost about half a microsecond per row in
Python; on the hundreds of thousands of rows of a dataset's CSVs that is most of the time a reader
takes. :func:`clean_text` skips the work when it would change nothing and otherwise does it once per
distinct value; :func:`read_csv` lets pandas' C parser read numbers and falls back to a field-by-field
check only to name a bad field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.errors import DataError

#: Every ASCII character ``str.isspace`` counts (what ``str.strip`` and ``str.splitlines`` look for).
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


def plain(text: str, allow: str = "") -> bool:
    """Whether ``text`` is ASCII without whitespace other than the characters ``allow``: then stripping or
    splitting lines changes nothing (checked at C speed: one scan per character)."""
    return text.isascii() and not any(c in text for c in _ASCII_WHITESPACE if c not in allow)


def clean_text(column: pd.Series, upper: bool = False) -> pd.Series:
    """``column.str.strip()`` (then ``.str.upper()``): the column itself when that changes nothing (the
    usual case, decided on the values joined into one string), else computed once per distinct value."""
    joined = "".join(column.to_numpy(dtype=object)) if not column.hasnans else None
    if joined is not None and plain(joined) and (not upper or joined == joined.upper()):
        return column
    return map_text(column, (lambda value: value.strip().upper()) if upper else str.strip)


def map_text(column: pd.Series, function: Callable[[str], str]) -> pd.Series:
    """``function`` applied to every value of a text column: once per distinct value, in Python (what
    ``column.str.strip()`` and the like give, at a fraction of their cost per row)."""
    codes, uniques = pd.factorize(column, sort=False)
    if (codes < 0).any():  # missing values: pandas' own string methods keep them missing
        return column.map(function, na_action="ignore")
    mapped = np.array([function(value) for value in np.asarray(uniques, dtype=object)], dtype=object)
    return pd.Series(mapped[codes], index=column.index, dtype=column.dtype)


def find_file(root: Path, names: Sequence[str], folders: Sequence[str] = ("",)) -> Path | None:
    """The first of ``names`` (or its ``.gz``: CSVs are distributed either way) in ``root/<folder>``."""
    for folder in folders:
        base = root / folder if folder else root
        for name in names:
            for candidate in (base / name, base / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    return None


def csv_header(path: Path, strip: bool = True) -> list[str]:
    """The column names of a CSV (plain or gzipped), stripped of spaces unless ``strip=False``; a DataError
    naming the file if it cannot be read."""
    try:
        names = [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read a CSV header ({exc})") from None
    return [n.strip() for n in names] if strip else names


def read_csv(path: Path, required: Sequence[str], *, numbers: Sequence[str] = (), integers: Sequence[str] = (),
             what: str) -> pd.DataFrame:
    """Read a CSV (plain or gzipped): ``numbers`` as float64 (an empty field is NaN), ``integers`` as int64,
    every other column as text (empty fields kept as ``""``); column names stripped of spaces.

    Raises:
        DataError: unreadable file; a ``required`` column missing (naming it and ``what`` was expected); a
            field of ``numbers`` or ``integers`` that is not one (naming its column, data row and CSV line).
    """
    raw_header = csv_header(path, strip=False)
    header = [c.strip() for c in raw_header]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(repr(m) for m in missing)}; expected {what} with "
                        f"the columns {', '.join(required)}")
    kinds = {raw: ("float64" if name in numbers else "int64" if name in integers else str)
             for raw, name in zip(raw_header, header)}
    na_values = {raw: [""] for raw, kind in kinds.items() if kind == "float64"}
    try:
        frame = pd.read_csv(path, dtype=kinds, keep_default_na=False, na_values=na_values, skipinitialspace=True)
    except ValueError:
        _name_bad_field(path, kinds)  # a number column holds something else: named there
        raise
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot parse as CSV ({exc}); expected {what}") from None
    frame.columns = header
    return frame


def _name_bad_field(path: Path, kinds: dict[str, Any]) -> None:
    """Raise the DataError naming the first field of a number column that pandas could not read."""
    text = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    for raw, kind in kinds.items():
        if kind == str:
            continue
        fields = text[raw].str.strip()
        values = pd.to_numeric(fields.where(fields != "", "nan"), errors="coerce")
        bad = values.isna().to_numpy() & (fields != "").to_numpy()
        if kind == "int64":  # no empty field, whole numbers only
            bad |= (fields == "").to_numpy() | (values.notna() & (values % 1 != 0)).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            expected = "a whole number" if kind == "int64" else "a number or an empty field"
            raise DataError(f"{path}: column {raw.strip()!r} of data row {row + 1} (CSV line {row + 2}) is "
                            f"{text[raw].iat[row]!r}; expected {expected}")
