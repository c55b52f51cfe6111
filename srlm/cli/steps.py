"""CLI group 'steps' (owner fills in)."""


def register(subparsers) -> None:
    pass
