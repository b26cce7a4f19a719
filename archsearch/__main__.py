"""`python -m archsearch` runs the command line (also under torchrun)."""
from archsearch.cli import main

main()
