"""`python3 -m osbuild` and the installed `osbuild` command.

The engine needs jsonschema besides the standard library; a Python without it gets
one line that says how to install it, not a traceback.
"""

import sys

# Modules outside the standard library that the engine imports, and where Debian has them.
REQUIRED = {"jsonschema": "python3-jsonschema"}


def main() -> None:
    try:
        from osbuild.main_cli import main_exit  # noqa: PLC0415 (the import is what is being checked)
    except ModuleNotFoundError as e:
        if e.name not in REQUIRED:
            raise
        print(f"error: osbuild needs the Python module '{e.name}', which {sys.executable} cannot import; "
              f"install it with 'apt-get install {REQUIRED[e.name]}' (Debian's python3) or "
              f"'{sys.executable} -m pip install {e.name}'", file=sys.stderr)
        sys.exit(2)
    main_exit()


if __name__ == "__main__":
    main()
