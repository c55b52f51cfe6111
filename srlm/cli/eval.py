"""CLI group 'eval' (owner fills in)."""


def register(subparsers) -> None:
    pass
