"""Command-line scripts of the prototype (plotting); the shell scripts next to this file wrap the pipeline."""
