"""CLI group 'data' (owner fills in)."""


def register(subparsers) -> None:
    pass
