"""The ``medvit`` command line: one console script, one module per subcommand group."""
