"""Write the portal's OpenAPI document: ``python -m portal.openapi docs/portal-openapi.json``.

The committed ``docs/portal-openapi.json`` is this output; a test fails when the app's schema
and the committed file differ, so regenerate it with this command after changing the API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from portal.app import openapi_document


def render() -> str:
    """The document as committed: indented, keys in the app's order, a final newline."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write to the path given, or print on stdout."""
    text = render()
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
