"""`python -m utils <command>`: see utils/cli.py."""
from utils.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
