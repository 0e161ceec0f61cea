"""SSH step types (paramiko) and the remote-command helper other providers reuse.

``session.run_remote(ctx, target, command)`` runs one command on an ``ssh`` target
with strict host-key checking, bounded timeouts, a killable remote process group and
the same ``Completed`` result as a local command; ``session.connect`` keeps one
connection open for several commands.
"""
