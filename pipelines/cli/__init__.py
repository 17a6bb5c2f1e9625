"""The command line: one module per command group, the config and its default TOML.

The only code that reads argv and the environment.
"""
