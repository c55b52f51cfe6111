"""The `srlm` console command. Each subcommand group lives in its own module exposing `register(subparsers)`;
handlers import heavy libraries lazily so that `srlm --help` stays fast."""
