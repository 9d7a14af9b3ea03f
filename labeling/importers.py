"""Streaming CSV and JSONL parsers for dataset imports. Pure: no Django.

A parser reads a binary stream once, line by line, with every line bounded (`max_line_bytes`),
so memory stays flat whatever the file holds (a 50 MB single line fails after reading at most
`max_line_bytes` of it). It validates every row and yields `ParsedRow`s; the first problem
raises `ImportFileError` with a message naming the line (and the byte offset for bad UTF-8).
The caller inserts rows as they come and rolls everything back on an error.
"""
from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass
from typing import BinaryIO, Iterator

TEXT_COLUMN = "text"
LABEL_COLUMN = "label"
SPLIT_COLUMN = "split"
METADATA_KEY = "metadata"
SPLITS = ("pool", "evaluation")
FORMATS = ("csv", "jsonl")
MAX_LABEL_CHARS = 200
# Distinct metadata keys a JSONL file may introduce: the union is kept for the export header.
MAX_METADATA_KEYS = 200
DEFAULT_MAX_LINE_BYTES = 1024 * 1024

# Signatures of common binary formats, so a zip or PDF renamed .csv gets a clear message.
_BINARY_MAGIC = {
    b"PK\x03\x04": "a ZIP archive (an .xlsx workbook is one: save it as CSV)",
    b"\x1f\x8b": "a gzip archive",
    b"%PDF": "a PDF document",
    b"\xd0\xcf\x11\xe0": "an old Excel/Office document",
    b"SQLite format 3": "an SQLite database",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
}
_BOM = b"\xef\xbb\xbf"
_NUL = b"\x00"


class ImportFileError(ValueError):
    """The file cannot be imported; the message says where and why."""


@dataclass(frozen=True, slots=True)
class ParsedRow:
    line: int
    text: str
    label: str | None
    split: str
    metadata: dict


@dataclass(slots=True)
class _Limits:
    max_text_chars: int
    max_line_bytes: int


def detect_format(filename: str) -> str:
    """`csv` or `jsonl` from the file name's extension."""
    lowered = filename.lower()
    if lowered.endswith((".csv", ".tsv")):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    raise ImportFileError("Unsupported file type: upload a .csv, .tsv or .jsonl file")


def check_not_binary(head: bytes) -> None:
    """Rejects an empty file and the usual binary formats from the first bytes of a file."""
    if not head.strip(b" \t\r\n" + _BOM):
        raise ImportFileError("The file is empty")
    for magic, what in _BINARY_MAGIC.items():
        if head.startswith(magic):
            raise ImportFileError(f"This is {what}, not a text file: upload CSV or JSONL (UTF-8)")
    if _NUL in head:
        raise ImportFileError(
            f"The file contains NUL bytes (first at byte offset {head.index(_NUL)}): it looks binary, not UTF-8 text"
        )


class _LineReader:
    """Decoded lines of a binary stream, each bounded in length; tracks line number and bytes read."""

    def __init__(self, stream: BinaryIO, max_line_bytes: int):
        self.stream = stream
        self.max_line_bytes = max_line_bytes
        self.line = 0
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        readline = self.stream.readline
        limit = self.max_line_bytes
        while True:
            raw = readline(limit + 1)
            if not raw:
                return
            offset = self.bytes_read
            self.bytes_read += len(raw)
            self.line += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                raise ImportFileError(f"Line {self.line} is longer than {limit} bytes; shorten it or split the file")
            if self.line == 1 and raw.startswith(_BOM):
                raw = raw[3:]
                offset += 3
            if _NUL in raw:
                raise ImportFileError(
                    f"Line {self.line} contains a NUL byte (byte offset {offset + raw.index(_NUL)}): the file looks binary"
                )
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ImportFileError(
                    f"Line {self.line}: invalid UTF-8 at byte offset {offset + exc.start}; save the file as UTF-8"
                ) from None


def _clean_text(value, line: int, limits: _Limits) -> str:
    if not isinstance(value, str):
        raise ImportFileError(f"Line {line}: text must be a string")
    if not value.strip():
        raise ImportFileError(f"Line {line}: text is empty")
    if len(value) > limits.max_text_chars:
        raise ImportFileError(f"Line {line}: text has {len(value)} characters; the limit is {limits.max_text_chars} "
                              "(LABELF_MAX_TEXT_CHARS on the server raises it)")
    return value


def _clean_label(value, line: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ImportFileError(f"Line {line}: label must be a string or empty")
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_LABEL_CHARS:
        raise ImportFileError(f"Line {line}: label is longer than {MAX_LABEL_CHARS} characters")
    return value


def _clean_split(value, line: int) -> str:
    if value is None:
        return "pool"
    if not isinstance(value, str):
        raise ImportFileError(f"Line {line}: split must be \"pool\" or \"evaluation\"")
    value = value.strip().lower()
    if not value:
        return "pool"
    if value not in SPLITS:
        raise ImportFileError(f"Line {line}: split is \"{value[:40]}\"; expected \"pool\" or \"evaluation\"")
    return value


def validate_record(item, position: str, *, max_text_chars: int) -> ParsedRow:
    """One record given as a dict (JSON API bodies, JSONL lines). `position` names it in messages."""
    limits = _Limits(max_text_chars=max_text_chars, max_line_bytes=0)
    return _row_from_object(item, position, limits, line=0)


def _row_from_object(item, where: str, limits: _Limits, line: int) -> ParsedRow:
    if not isinstance(item, dict):
        raise ImportFileError(f"{where}: expected a JSON object")
    if TEXT_COLUMN not in item:
        raise ImportFileError(f"{where}: the \"text\" field is missing")
    try:
        text = _clean_text(item[TEXT_COLUMN], 0, limits)
        label = _clean_label(item.get(LABEL_COLUMN), 0)
        split = _clean_split(item.get(SPLIT_COLUMN), 0)
    except ImportFileError as exc:
        raise ImportFileError(str(exc).replace("Line 0", where, 1)) from None
    metadata = item.get(METADATA_KEY) or {}
    if not isinstance(metadata, dict):
        raise ImportFileError(f"{where}: metadata must be a JSON object")
    extra = {k: v for k, v in item.items() if k not in (TEXT_COLUMN, LABEL_COLUMN, SPLIT_COLUMN, METADATA_KEY)}
    if extra:
        metadata = {**metadata, **extra}
    return ParsedRow(line=line, text=text, label=label, split=split, metadata=metadata)


ROLES = (TEXT_COLUMN, LABEL_COLUMN, SPLIT_COLUMN)


def validate_column_mapping(columns: dict[str, str] | None) -> dict[str, str]:
    """{role: source column} for the roles given a non-empty name; unknown roles or two roles on one column are errors."""
    cleaned: dict[str, str] = {}
    for role, source in (columns or {}).items():
        if role not in ROLES:
            raise ImportFileError(f"Unknown column role {role!r}: expected one of {', '.join(ROLES)}")
        if source is None or (isinstance(source, str) and not source.strip()):
            continue
        if not isinstance(source, str) or len(source) > MAX_LABEL_CHARS:
            raise ImportFileError(f"{role}_column: expected a column name of at most {MAX_LABEL_CHARS} characters")
        cleaned[role] = source.strip()
    sources = [source.lower() for source in cleaned.values()]
    if len(set(sources)) != len(sources):
        raise ImportFileError("The text, label and split columns must be different columns")
    return cleaned


def _rename_keys(item: dict, columns: dict[str, str], where: str) -> dict:
    """A JSONL object with the chosen keys renamed to text / label / split."""
    renamed = dict(item)
    for role, source in columns.items():
        if role in renamed and source != role:
            raise ImportFileError(f"{where}: has both \"{role}\" and the chosen {role} key \"{source}\"")
        if source in renamed:
            renamed[role] = renamed.pop(source)
        elif role == TEXT_COLUMN:
            raise ImportFileError(f"{where}: the text key \"{source}\" is missing")
    return renamed


# Spreadsheets exported in many locales separate fields with ";" (or tabs): the header line tells which.
CSV_DELIMITERS = (",", ";", "\t", "|")


def _header_delimiter(header_line: str, text_column: str = TEXT_COLUMN) -> str:
    """The delimiter that makes the header hold the text column. When none does, the one that splits the header
    into the most columns ("," on a tie), so the error names the file's real columns ("message, topic") for
    the user to map, not one run-together "message;topic"."""
    widest, widest_count = ",", 0
    for delimiter in CSV_DELIMITERS:
        try:
            cells = next(csv.reader([header_line], delimiter=delimiter))
        except (csv.Error, StopIteration):
            continue
        if any(cell.strip().lower() == text_column.lower() for cell in cells):
            return delimiter
        if len(cells) > widest_count:
            widest, widest_count = delimiter, len(cells)
    return widest


class DatasetParser:
    """Iterate to get rows. `columns` (metadata keys, in order) and `bytes_read` are live."""

    def __init__(self, stream: BinaryIO, fmt: str, *, max_text_chars: int, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 columns: dict[str, str] | None = None):
        if fmt not in FORMATS:
            raise ImportFileError(f"Unsupported format {fmt!r}: expected csv or jsonl")
        # Which source column (CSV) or key (JSONL) holds the text, label or split, when it is not named so.
        self.columns = validate_column_mapping(columns)
        self.format = fmt
        self.limits = _Limits(max_text_chars=max_text_chars, max_line_bytes=max_line_bytes)
        self._lines = _LineReader(stream, max_line_bytes)
        self.metadata_columns: list[str] = []
        self._header_read = False
        self._csv_reader = None
        self._csv_roles: list[str] = []
        self.delimiter = ","

    @property
    def bytes_read(self) -> int:
        return self._lines.bytes_read

    def read_header(self) -> list[str]:
        """Reads and checks the header (CSV) so file-level problems surface before any row."""
        if self._header_read:
            return self.metadata_columns
        self._header_read = True
        if self.format == "csv":
            self._read_csv_header()
        return self.metadata_columns

    def __iter__(self) -> Iterator[ParsedRow]:
        self.read_header()
        return self._iter_csv() if self.format == "csv" else self._iter_jsonl()

    # --- CSV ----------------------------------------------------------------------------

    def _read_csv_header(self) -> None:
        # The csv module's own field limit is global to the process; a field can span lines,
        # so bound it as well as each physical line.
        csv.field_size_limit(max(self.limits.max_line_bytes, 131072))
        lines = iter(self._lines)
        first = next((line for line in lines if line.strip()), None)
        if first is None:
            raise ImportFileError("The file is empty: expected a header row with a \"text\" column")
        self.delimiter = _header_delimiter(first, self.columns.get(TEXT_COLUMN, TEXT_COLUMN))
        self._csv_reader = csv.reader(itertools.chain([first], lines), delimiter=self.delimiter, strict=True)
        header = None
        try:
            for row in self._csv_reader:
                if row and any(cell.strip() for cell in row):
                    header = row
                    break
        except csv.Error as exc:
            raise ImportFileError(f"Line {self._lines.line}: {exc}") from None
        if header is None:
            raise ImportFileError("The file is empty: expected a header row with a \"text\" column")
        names = [name.strip() for name in header]
        mapped = {source.lower(): role for role, source in self.columns.items()}
        for role, source in self.columns.items():
            if source.lower() not in (name.lower() for name in names):
                shown = ", ".join(names[:10])
                raise ImportFileError(f"Header: the {role} column \"{source}\" is not in the file; found columns: {shown}")
        roles = []
        seen: dict[str, int] = {}
        for position, name in enumerate(names, start=1):
            if not name:
                raise ImportFileError(f"Header: column {position} has no name")
            if name.lower() in mapped:
                key = mapped[name.lower()]
            elif name.lower() in self.columns:
                raise ImportFileError(f"Header: column \"{name}\" and the chosen {name.lower()} column "
                                      f"\"{self.columns[name.lower()]}\" would both be the {name.lower()}; rename one of them")
            else:
                key = name.lower() if name.lower() in (TEXT_COLUMN, LABEL_COLUMN, SPLIT_COLUMN) else name
            if key in seen:
                raise ImportFileError(f"Header: duplicate column name \"{name}\" (columns {seen[key]} and {position})")
            seen[key] = position
            roles.append(key)
        if TEXT_COLUMN not in seen:
            shown = ", ".join(names[:10])
            raise ImportFileError(f"Header: a \"text\" column is required; found columns: {shown}")
        self._csv_roles = roles
        self.metadata_columns = [r for r in roles if r not in (TEXT_COLUMN, LABEL_COLUMN, SPLIT_COLUMN)]

    def _iter_csv(self) -> Iterator[ParsedRow]:
        roles = self._csv_roles
        width = len(roles)
        text_at = roles.index(TEXT_COLUMN)
        label_at = roles.index(LABEL_COLUMN) if LABEL_COLUMN in roles else None
        split_at = roles.index(SPLIT_COLUMN) if SPLIT_COLUMN in roles else None
        metadata_at = [(i, r) for i, r in enumerate(roles) if r not in (TEXT_COLUMN, LABEL_COLUMN, SPLIT_COLUMN)]
        limits = self.limits
        lines = self._lines
        reader = self._csv_reader
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise ImportFileError(f"Line {lines.line}: {exc}") from None
            line = lines.line
            if len(row) != width:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                raise ImportFileError(f"Line {line} has {len(row)} fields; the header has {width}")
            yield ParsedRow(
                line=line,
                text=_clean_text(row[text_at], line, limits),
                label=_clean_label(row[label_at], line) if label_at is not None else None,
                split=_clean_split(row[split_at], line) if split_at is not None else "pool",
                metadata={name: row[i] for i, name in metadata_at},
            )

    # --- JSONL --------------------------------------------------------------------------

    def _iter_jsonl(self) -> Iterator[ParsedRow]:
        known = set(self.metadata_columns)
        for text_line in self._lines:
            line = self._lines.line
            if not text_line.strip():
                continue
            try:
                item = json.loads(text_line)
            except (ValueError, RecursionError) as exc:
                raise ImportFileError(f"Line {line} is not valid JSON: {exc}") from None
            if self.columns and isinstance(item, dict):
                item = _rename_keys(item, self.columns, f"Line {line}")
            row = _row_from_object(item, f"Line {line}", self.limits, line)
            for key in row.metadata:
                if key not in known:
                    if len(known) >= MAX_METADATA_KEYS:
                        raise ImportFileError(f"Line {line}: more than {MAX_METADATA_KEYS} distinct metadata keys")
                    known.add(key)
                    self.metadata_columns.append(key)
            yield row
