"""A tiny Hugging Face Hub look-alike for tests: standard library only, read-only, 127.0.0.1 only.

It answers the requests that `huggingface_hub` and `datasets.load_dataset("owner/name")`
(streaming or not) make for a repository of plain files, so tests can load a Hub id offline::

    with LocalHub() as hub:
        hub.add_repo("testuser/stories", {"data/train.jsonl": '{"text": "hi"}\\n'})
        # run the client in a subprocess with HF_ENDPOINT=hub.url (huggingface_hub reads it at import)

Repos live in memory as {path: bytes}, keyed by (repo_type, repo_id); the repo type is part of
every route, so model and Space repos are served the same way. One commit per repo: the
revision must be "main" or the repo's sha. Uploads are not implemented. The endpoints, and who
needs them (``{type}``: models|datasets|spaces; ``{prefix}``: ""|"datasets/"|"spaces/"):

* ``HEAD /``: `hf_scratchgpt.data.hub_is_reachable` probes the endpoint root.
* ``GET /api/{type}/{repo}[/revision/{rev}]``: repo info (`HfApi.repo_info`/`dataset_info`).
  `datasets` calls it to pin the commit when the repo has no README.md, and `HfFileSystem` to
  check that the repo and revision exist. Clients read ``sha``.
* ``GET /api/{type}/{repo}/tree/{rev}[/{path}][?recursive=true]``: folder listing
  (`HfFileSystem.ls`/`glob`), which `datasets` uses to find the data files of each split, from
  its default patterns or the README's ``configs:``. Paths and revisions arrive URL-encoded.
* ``HEAD|GET /{prefix}{repo}/resolve/{rev}/{path}``: file content. `hf_hub_download` (README.md,
  .huggingface.yaml, dataset_infos.json, data files when not streaming) sends HEAD and needs
  ``X-Repo-Commit``, ``ETag`` and ``Content-Length``, then GET. Streaming reads data files
  through `HfFileSystem` with ``Range`` requests (206, or 416 past the end).

Missing repos, revisions and files get 404 with ``X-Error-Code`` RepoNotFound / RevisionNotFound
/ EntryNotFound, which `huggingface_hub` turns into its typed errors (and `datasets` into
"doesn't exist on the Hub"). Anything else is a plain 404, e.g. ``GET /api/agent-harnesses``,
best-effort telemetry that `huggingface_hub` ignores when it fails. Every request is logged in
``LocalHub.requests`` as "METHOD /path" (plus " Range: ..." when given).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(/.*)?)?$")
_RESOLVE = re.compile(r"^/(datasets/|spaces/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def git_blob_sha(data: bytes) -> str:
    """The id git (and the Hub) gives a file: sha1 of ``b"blob <size>\\0" + data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error reply: HTTP status, message, and the Hub's ``X-Error-Code`` when it has one."""

    def __init__(self, message: str, code: str | None = None, status: int = 404) -> None:
        super().__init__(message)
        self.code, self.status = code, status


class LocalHub:
    """An in-memory Hub on ``http://127.0.0.1:<free port>``, served by a daemon thread."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def add_repo(self, repo_id: str, files: dict[str, bytes | str], repo_type: str = "dataset") -> str:
        """Create (or replace) a repo; returns its commit sha, a hash of the content."""
        if repo_type not in _URL_PREFIX:
            raise ValueError(f"repo_type must be one of {sorted(_URL_PREFIX)}, not {repo_type!r}")
        encoded = {path: data.encode() if isinstance(data, str) else data for path, data in files.items()}
        self.repos[(repo_type, repo_id)] = encoded
        return self.commit_sha(repo_type, repo_id)

    def commit_sha(self, repo_type: str, repo_id: str) -> str:
        files = self.repos[(repo_type, repo_id)]
        return hashlib.sha1(
            json.dumps({p: git_blob_sha(d) for p, d in sorted(files.items())}).encode()
        ).hexdigest()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> LocalHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lookups shared by the endpoints ----------------------------------------------------

    def _repo(self, repo_type: str, repo_id: str, revision: str) -> tuple[dict[str, bytes], str]:
        if (repo_type, repo_id) not in self.repos:
            raise HubError(f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        sha = self.commit_sha(repo_type, repo_id)
        if revision not in ("main", sha):
            raise HubError(f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.repos[(repo_type, repo_id)], sha

    @staticmethod
    def _entries(files: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
        """Tree entries under ``folder`` ("" is the root), folders first, as the Hub lists them."""
        prefix = f"{folder}/" if folder else ""
        dirs, out = set(), []
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                dirs.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                out.append(_file_entry(path, files[path]))
        folders = [
            {"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest()}
            for d in sorted(dirs)
        ]
        return folders + out


def _file_entry(path: str, data: bytes) -> dict:
    return {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha(data)}


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the Hub; every reply sets Content-Length

        def log_message(self, *args: object) -> None:
            pass  # quiet: the test output is for the tests

        def do_HEAD(self) -> None:
            self._dispatch(send_body=False)

        def do_GET(self) -> None:
            self._dispatch(send_body=True)

        def do_POST(self) -> None:
            self._dispatch(send_body=True)

        def _dispatch(self, send_body: bool) -> None:
            url = urlsplit(self.path)
            rng = self.headers.get("Range")
            hub.requests.append(f"{self.command} {url.path}" + (f" Range: {rng}" if rng else ""))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))  # keep the connection in sync
            try:
                if match := _API.match(url.path):
                    self._api(*match.groups(), query=parse_qs(url.query))
                elif (match := _RESOLVE.match(url.path)) and self.command in ("GET", "HEAD"):
                    prefix, repo_id, revision, path = match.groups()
                    repo_type = REPO_TYPES[(prefix or "models/").rstrip("/")]
                    self._resolve(repo_type, repo_id, unquote(revision), unquote(path), send_body)
                elif url.path == "/":
                    self._send(200, b"local hub\n", {"Content-Type": "text/plain"}, send_body)
                else:
                    raise HubError(f"No route for {self.command} {url.path}")
            except HubError as err:
                payload = json.dumps({"error": str(err)}).encode()
                headers = {"Content-Type": "application/json", "X-Error-Message": str(err)}
                if err.code:
                    headers["X-Error-Code"] = err.code
                self._send(err.status, payload, headers, send_body)

        def _api(self, kind, repo_id, action, revision, path, *, query) -> None:
            repo_type, revision = REPO_TYPES[kind], unquote(revision or "main")
            files, sha = hub._repo(repo_type, repo_id, revision)
            if action in (None, "revision") and self.command == "GET":
                siblings = [{"rfilename": p, "size": len(d)} for p, d in sorted(files.items())]
                reply = {"id": repo_id, "sha": sha, "private": False, "disabled": False, "siblings": siblings}
            elif action == "tree" and self.command == "GET":
                folder = unquote(path or "").strip("/")
                if folder and not any(p.startswith(folder + "/") for p in files):
                    raise HubError(f"{folder} does not exist on {revision}", "EntryNotFound")
                reply = hub._entries(files, folder, query.get("recursive", ["false"])[0].lower() == "true")
            else:
                raise HubError(f"{self.command} {action} is not implemented", status=405)
            self._send(200, json.dumps(reply).encode(), {"Content-Type": "application/json"}, True)

        def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str, send_body: bool) -> None:
            files, sha = hub._repo(repo_type, repo_id, revision)
            if path not in files:
                raise HubError(f"{path} does not exist on {revision}", "EntryNotFound")
            data, status = files[path], 200
            headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(data)}"', "Accept-Ranges": "bytes"}
            headers["Content-Type"] = "application/octet-stream"
            match = _RANGE.match(self.headers.get("Range", "").strip())
            if match and any(match.groups()):  # "bytes=a-b", "bytes=a-" or the last b bytes "bytes=-b"
                first, last = match.groups()
                start = max(0, len(data) - int(last)) if not first else int(first)
                end = len(data) - 1 if not first or not last else min(int(last), len(data) - 1)
                if start >= len(data) or start > end:  # e.g. reading on at the end of the file
                    return self._send(
                        416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"}, send_body
                    )
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start : end + 1], 206
            self._send(status, data, headers, send_body)

        def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            if send_body:
                self.wfile.write(body)

    return Handler
