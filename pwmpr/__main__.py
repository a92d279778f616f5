"""``python -m pwmpr`` runs the command line."""

from pwmpr.cli.app import main

main()
