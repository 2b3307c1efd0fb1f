"""How a file is laid out for the model (the style-3 layout): its lines, numbered, between start and end
markers. The context stage counts the tokens of files in it, the prompt stage shows them in it, and the apply
check shows excerpts of files in it to the repair stage."""


def file_lines(content):
    """Lines as git numbers them (split on \\n only), without the empty piece after a final newline."""
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def block_units(path, lines, first_line=1, line_numbers=True):
    """A file in the style-3 layout, its lines (numbered) between start and end markers, cut
    at line ends: the parts whose token counts add up to the block's."""
    numbered = (f"{first_line + n} {line}\n" if line_numbers else f"{line}\n" for n, line in enumerate(lines))
    return [f"[start of {path}]\n", *numbered, f"[end of {path}]\n"]


def render_file(entry, line_numbers=True):
    """One file's block, as the prompt shows it."""
    units = block_units(entry["path"], file_lines(entry["content"]), entry.get("first_line", 1), line_numbers)
    return "".join(units)[:-1]
