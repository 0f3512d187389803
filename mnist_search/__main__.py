"""`python -m mnist_search ...` is the `mnist-search` command."""

from mnist_search.cli import main

main()
