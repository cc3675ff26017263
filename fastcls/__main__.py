"""`python -m fastcls` runs the command-line tool."""

from fastcls.cli.app import main

main()
