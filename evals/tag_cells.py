"""One rule for tags written as text: a CSV file's tags cell (export and import) and the tags field of
the case forms.

Tags are separated by a comma or a semicolon (spreadsheets in many locales write `;`). A tag that
holds a separator, a double quote or spaces at its ends is written between double quotes, its own
quotes doubled, as CSV quotes a cell: `"@sum(1,2)", json` is the two tags `@sum(1,2)` and `json`,
so every tag a case can hold survives an export and an import.
"""

SEPARATORS = (",", ";")
# What the import page and the forms say (one sentence, one owner).
SEPARATORS_NOTE = 'Separate tags with a comma or a semicolon; a tag that holds one goes between double quotes ("a, b").'


def tags_cell_split(text: str) -> list[str]:
    """The tags of a cell, in order: spaces around a separator dropped, a quoted tag kept as
    written between its quotes, blank ones left out (the caller cleans each)."""
    tags, current, quoted, was_quoted, index = [], [], False, False, 0

    def end_tag():
        tag = "".join(current)
        tags.append(tag if was_quoted else tag.strip())

    while index < len(text):
        char = text[index]
        if quoted:
            if char == '"' and text[index + 1 : index + 2] == '"':  # a doubled quote: one quote in the tag
                current.append('"')
                index += 1
            elif char == '"':
                quoted = False
            else:
                current.append(char)
        elif char == '"' and not "".join(current).strip():  # a quote opening a tag (spaces before it dropped)
            quoted, was_quoted, current = True, True, []
        elif char in SEPARATORS:
            end_tag()
            current, was_quoted = [], False
        elif not (was_quoted and char == " "):  # spaces after a closing quote are no part of the tag
            current.append(char)
        index += 1
    end_tag()
    return [tag for tag in tags if tag.strip()]


def tags_cell_joined(tags) -> str:
    """The cell `tags_cell_split` reads back as `tags`."""
    return ", ".join(_quoted(tag) if _needs_quotes(tag) else tag for tag in tags)


def _needs_quotes(tag: str) -> bool:
    return any(separator in tag for separator in SEPARATORS) or '"' in tag or tag != tag.strip()


def _quoted(tag: str) -> str:
    return '"' + tag.replace('"', '""') + '"'
