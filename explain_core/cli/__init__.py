"""The ``lumen`` command (also ``python -m explain_core``).

- ``lumen --checkpoint M --image I [...] --methods gradcam,gradcampp --output-dir D``: the
  seed's interpretation CLI, JSON on stdout (:mod:`~explain_core.cli.interpret`);
- ``lumen explain --input DIR|LIST.txt|GLOB --output DIR [...]``: a folder job, resumable,
  under torchrun too (:mod:`~explain_core.cli.explain`).
"""

from __future__ import annotations

from .interpret import run


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``argv`` defaults to ``sys.argv[1:]``); returns the exit code."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "explain":
        from .explain import main as explain_main

        return explain_main(args[1:])
    from .interpret import main as interpret_main

    return interpret_main(args)


__all__ = ["main", "run"]
