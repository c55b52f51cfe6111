"""CLI group 'model' (owner fills in)."""


def register(subparsers) -> None:
    pass
