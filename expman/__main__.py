"""``python -m expman`` and the ``expman`` console script: the command's first instructions.

Signal handling comes first, before the command's modules load (:mod:`expman.interrupts`):
a Ctrl-C in the first milliseconds is an interruption with exit 130, not a traceback.
"""

from expman.interrupts import ending, install

install()


def main() -> int:
    """Run the ``expman`` command with ``sys.argv``; returns its exit code."""
    from expman.cli import main as command

    code = command()
    ending(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
