from drctl.cli.app import entry

entry()
