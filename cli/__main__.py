"""`python -m numrnn_cli` runs the `numrnn` command."""

from numrnn_cli import main

main()
