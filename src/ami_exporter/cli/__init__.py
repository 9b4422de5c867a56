"""The command line: flag parsing, logging setup, and the subcommands (serve, check, demo)."""
