"""`studio`: the console command of an installed studio (`pip install` of the wheel).

    studio serve [--host H] [--port P]   set up ./data and serve (as `make run` does)
    studio worker                        a standalone model worker (scaled mode)
    studio manage <command> [...]        any Django management command (migrate, createsuperuser, ...)

Data lives in ./data of the folder it runs in (STUDIO_DATA_DIR moves it).
"""

import os
import sys

from django.core.management import execute_from_command_line

from studio.data_dir import prepare

_COMMANDS = {"serve": ["serve"], "worker": ["llm_worker"], "manage": []}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in _COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    prepare()  # the data folder and its secret key, before the settings read them
    execute_from_command_line(["studio", *_COMMANDS[argv[0]], *argv[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
