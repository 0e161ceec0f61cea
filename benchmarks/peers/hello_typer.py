"""A bare typer + rich hello-world: the start-up floor drctl is measured against."""

import typer
from rich.console import Console

app = typer.Typer()


@app.command()
def hello(name: str = typer.Argument("world", help="Who to greet.")) -> None:
    """Print a greeting with rich."""
    Console().print(f"[bold green]Hello, {name}![/bold green]")


if __name__ == "__main__":
    app()
