"""optuna-dashboard served from this process, in the foreground (the CLI) or on a thread
(a notebook), over a storage object this package opened.

Serving in-process, rather than running the `optuna-dashboard` command, keeps the storage URL
and its password off every command line (`ps` shows command lines to every local user).
"""

from __future__ import annotations

import logging
import socketserver
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..errors import UsageError

if TYPE_CHECKING:
    import optuna

__all__ = ["Dashboard"]

log = logging.getLogger(__name__)


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck browser request never keeps the process alive


_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_ANY = ("", "0.0.0.0", "::")  # every interface: the names it is reached by are not known


class _HostCheck:
    """The dashboard only for the Host it was bound for. optuna-dashboard has no
    authentication and a write API (rename, delete with the models), so a page elsewhere
    that rebinds its own name to 127.0.0.1 (DNS rebinding) must get 421, not the API."""

    def __init__(self, app: Any, host: str) -> None:
        self.app, self.host = app, host
        self.port = 0  # known once the server is bound

    def allowed(self, header: str) -> bool:
        if self.host in _ANY:
            return True
        if header.startswith("["):  # [::1]:8080
            name, _, rest = header[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            name, _, port = header.partition(":")
        names = {self.host.lower()} | (set(_LOOPBACK) if self.host in _LOOPBACK else set())
        return name.lower() in names and port in ("", str(self.port))

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not self.allowed(str(environ.get("HTTP_HOST", ""))):
            start_response("421 Misdirected Request", [("Content-Type", "text/plain")])
            return [b"this dashboard answers only to the host it was started for\n"]
        return self.app(environ, start_response)


class _QuietHandler(WSGIRequestHandler):
    """Request lines at debug level on this package's logger, not on stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("dashboard: " + format, *args)


class Dashboard:
    """optuna-dashboard on `host:port` (port 0: a free one) over `storage`.

    `serve_forever()` blocks; `start()` serves on a daemon thread and returns at once, and
    `stop()` ends either. The artifact folder, when given, lists the trials' models.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, host: str = "127.0.0.1",
                 port: int = 0, artifact_dir: Path | None = None) -> None:
        import optuna_dashboard

        store = None
        if artifact_dir is not None:
            from optuna.artifacts import FileSystemArtifactStore

            store = FileSystemArtifactStore(str(artifact_dir))
        if host not in _LOOPBACK:
            log.warning("binding %s: optuna-dashboard has no authentication; anyone who can "
                        "reach this port can change or delete studies", host or "0.0.0.0")
        app = _HostCheck(optuna_dashboard.wsgi(storage, artifact_store=store), host)
        try:
            self._server = make_server(host, port, app, server_class=_ThreadedServer,
                                       handler_class=_QuietHandler)
        except OSError as exc:
            raise UsageError(f"cannot serve the dashboard on {host}:{port}: {exc.strerror} "
                             "(choose another --port, or 0 for a free one)") from None
        self.host = host
        self.port = app.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/dashboard"

    def serve_forever(self) -> None:
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def start(self) -> Dashboard:
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, daemon=True,
                                            name=f"dashboard-{self.port}")
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:  # never started: shutdown() would wait for a loop forever
            self._server.server_close()
            return
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __repr__(self) -> str:
        return f"Dashboard({self.url})"

    def _repr_html_(self) -> str:
        return f"<a href='{self.url}' target='_blank'>optuna-dashboard at {self.url}</a>"
