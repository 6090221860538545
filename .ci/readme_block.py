"""Print the N-th shell code block of a Markdown section: `readme_block.py FILE SECTION N`.

CI runs the README's own test command this way, so the two cannot drift apart. Exits
non-zero (and CI with it) when the section or the block is missing.
"""

from __future__ import annotations

import re
import sys


def block(text: str, section: str, number: int) -> str:
    heading = re.search(rf"^(#+)\s*{re.escape(section)}\b.*$", text, re.M | re.I)
    if heading is None:
        raise SystemExit(f"no section {section!r}")
    level = len(heading.group(1))
    rest = text[heading.end() :]
    end = re.search(rf"^#{{1,{level}}}\s", rest, re.M)
    body = rest[: end.start()] if end else rest
    blocks = re.findall(r"^```(?:bash|sh|shell|console)\n(.*?)^```", body, re.S | re.M)
    if len(blocks) < number:
        raise SystemExit(f"section {section!r} has {len(blocks)} shell blocks, not {number}")
    return str(blocks[number - 1]).strip()


if __name__ == "__main__":
    path, section, number = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(path, encoding="utf-8") as file:
        print(block(file.read(), section, number))
