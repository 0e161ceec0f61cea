"""The MongoDB canary: numbered documents inserted with write concern ``majority, j: true``.

It writes through the replica-set URI an application would use, with one long-lived
``MongoClient``, as an application does: after a failure the same client goes on, and
its own monitoring finds the new primary. A write is acknowledged when the insert
returned with its write concern satisfied, so the document is on a majority of the
voting members' journals; the server that confirmed it is taken from the client's
command events, not guessed. Documents go to ``drctl_canary`` in the URI's default
database (``drctl`` when it names none), ``_id`` = ``<drill id>/<seq>``.

The read-back asks the primary with read concern ``majority``: what it returns survives
any further election.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from drctl.drill.canary import Canary, CanaryError
from drctl.drill.conninfo import mask_dsn

COLLECTION = "drctl_canary"


def _last_server(command: str) -> Any:
    """A pymongo command listener whose ``address`` is the server that answered the
    last successful ``command``.

    Events of a client's commands come from the thread that ran them (server monitoring
    publishes heartbeats elsewhere), and each canary client has one such thread.
    """
    from pymongo import monitoring

    class LastServer(monitoring.CommandListener):
        address = ""

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            pass

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            if event.command_name == command:
                host, port = event.connection_id
                self.address = f"{host}:{port}"

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    return LastServer()


def _client(uri: str, budget: float, listener: Any, **options: Any) -> Any:
    from pymongo import MongoClient

    from drctl.providers.mongo.session import timeouts

    return MongoClient(
        uri, appname="drctl-canary", event_listeners=[listener], **timeouts(uri, budget), **options
    )


class MongoCanary(Canary):
    """Inserts numbered documents through the application's replica-set URI until stopped."""

    kind = "mongo"

    def warm(self) -> None:
        from drctl.providers.mongo.probe import WriteProbe

        WriteProbe().warm()

    def check(self) -> None:
        from pymongo import uri_parser
        from pymongo.errors import PyMongoError

        for flag, uri in (("--canary-dsn", self.spec.dsn), ("--verify-dsn", self.spec.verify_dsn)):
            if uri is None:
                continue
            if not uri.startswith(("mongodb://", "mongodb+srv://")):
                raise CanaryError(f"{flag} is not a mongodb:// or mongodb+srv:// URI")
            if uri.startswith("mongodb+srv://"):
                continue  # parsing one looks its name up in DNS: the first write will tell
            try:
                uri_parser.parse_uri(uri)
            except (PyMongoError, ValueError) as exc:
                raise CanaryError(
                    f"{flag} is not a valid MongoDB URI: {self.describe_error(exc)}"
                ) from exc

    def _error_line(self, exc: BaseException) -> str:
        from drctl.providers.mongo.session import brief as first_line

        return first_line(exc)

    def _connect(self) -> Any:
        last = _last_server("insert")
        client = _client(
            self.spec.dsn, self.spec.timeout, last,
            w="majority", journal=True, wTimeoutMS=max(1, int(self.spec.timeout * 1000)),
        )  # fmt: skip
        return client, last

    def _write(self, conn: Any, seq: int) -> str:
        client, last = conn
        last.address = ""
        collection = client.get_default_database(default="drctl")[COLLECTION]
        collection.insert_one(
            {"_id": f"{self.drill_id}/{seq}", "drill_id": self.drill_id, "seq": seq,
             "at": datetime.now(UTC)}
        )  # fmt: skip
        return str(last.address)

    def _failures(self) -> tuple[type[BaseException], ...]:
        from pymongo.errors import PyMongoError

        return (PyMongoError, OSError)

    def _after_failure(self, conn: Any) -> Any:
        # An application keeps its client through an election: the driver finds the new
        # primary by itself. Only a client that could not be made is made again.
        return conn

    def _close(self, conn: Any) -> None:
        conn[0].close()

    def read_back(self) -> tuple[set[int], str, str]:
        from pymongo import ReadPreference
        from pymongo.errors import PyMongoError
        from pymongo.read_concern import ReadConcern

        uri = self.spec.verify_dsn or self.spec.dsn
        last = _last_server("find")
        try:
            client = _client(uri, 5.0, last)
            try:
                collection = client.get_default_database(default="drctl").get_collection(
                    COLLECTION,
                    read_concern=ReadConcern("majority"),
                    read_preference=ReadPreference.PRIMARY,
                )
                seqs = {
                    int(doc["seq"])
                    for doc in collection.find({"drill_id": self.drill_id}, {"seq": 1})
                }
            finally:
                client.close()
        except PyMongoError as exc:
            raise CanaryError(
                f"canary: cannot read back from the new primary: {self.describe_error(exc)}"
            ) from exc
        return seqs, last.address, mask_dsn(uri)
