"""The SSH provider's exceptions, raised from paramiko's and the socket's once, at the boundary.

::

    StepError (drctl.errors)
    ├── Unreachable              (drctl.errors) refused, no answer in time, name not resolved,
    │                            no SSH handshake
    ├── HostKeyRejected          the server's key is not one known_hosts trusts for it
    │   ├── HostKeyUnknown       no entry for [host]:port, or no known_hosts file at all
    │   ├── HostKeyChanged       an entry with another key: a rebuilt host or a man in the middle
    │   └── HostKeyRevoked       the key is listed after ``@revoked``
    ├── AuthenticationFailed     the server refused every credential offered
    └── StepTimeout              (drctl.errors) the command ran past its deadline, and was killed

Cancelled (drctl.errors) is raised, not wrapped, when the operator cancels a command.
"""

from __future__ import annotations

from drctl.errors import StepError


class HostKeyRejected(StepError):
    """Raised when the server's host key is not one the target's known_hosts trusts."""


class HostKeyUnknown(HostKeyRejected):
    """Raised when known_hosts has no entry for ``[host]:port`` (or does not exist)."""


class HostKeyChanged(HostKeyRejected):
    """Raised when known_hosts has an entry for the host with a different key."""


class HostKeyRevoked(HostKeyRejected):
    """Raised when the server's key is marked ``@revoked`` in known_hosts."""


class AuthenticationFailed(StepError):
    """Raised when the server accepts none of the credentials the target offers."""
