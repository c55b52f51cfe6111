"""CLI group 'report' (owner fills in)."""


def register(subparsers) -> None:
    pass
