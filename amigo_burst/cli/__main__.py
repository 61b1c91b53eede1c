"""`python -m amigo_burst.cli ...` is `amigo-burst ...`."""

from amigo_burst.cli.app import main

main()
