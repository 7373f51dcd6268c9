"""`python -m tui` runs the pocketops CLI (same as the `pocketops` script)."""
import sys

from tui.cli import main

if __name__ == "__main__":  # importing this module (e.g. a package walk) must not open the dashboard
    sys.exit(main())
