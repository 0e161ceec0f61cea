"""The command line: typer commands that parse flags and call the layers below."""
