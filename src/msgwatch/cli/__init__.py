"""The command line: parse options, call the library, render with Rich."""
