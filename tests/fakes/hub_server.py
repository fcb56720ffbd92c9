"""A tiny Hugging Face Hub look-alike for tests: standard library only, in memory, 127.0.0.1 only.

It answers the requests that `huggingface_hub`, `transformers` (`from_pretrained`, `push_to_hub`),
PEFT and `datasets.load_dataset("owner/name")` (streaming or not) make, so tests can pull and push
Hub ids offline::

    with LocalHub() as hub:
        hub.add_repo("testuser/stories", {"data/train.jsonl": '{"text": "hi"}\\n'})
        hub.add_token("hf_write", user="testuser")          # a write token for the namespace
        # clients: HF_ENDPOINT=hub.url (huggingface_hub reads it at import) and HF_HUB_DISABLE_XET=1

A repo is a git-like history: commits (sha -> files, parent, message) and branches (name -> sha).
`add_repo` (re)creates one with a single commit on main; `create_repo` over HTTP starts one with
a ``.gitattributes`` commit, as the Hub does. A revision is a branch name or a commit sha.
``{type}``: models|datasets|spaces; ``{prefix}``: ""|"datasets/"|"spaces/". Reading:

* ``HEAD /``: `hf_scratchgpt.data.hub_is_reachable` probes the endpoint root.
* ``GET /api/{type}/{repo}[/revision/{rev}]``: repo info (``sha``, ``siblings``, ``private``).
* ``GET /api/{type}/{repo}/tree/{rev}[/{path}][?recursive=true]``: folder listing (LFS files carry
  ``lfs: {oid, size}``); ``GET .../refs`` branches; ``GET .../commits/{rev}`` history, newest first.
* ``HEAD|GET /{prefix}{repo}/resolve/{rev}/{path}``: file content with ``X-Repo-Commit``, ``ETag``
  (the sha256 for LFS files) and ``Content-Length``; ``Range`` requests (206, or 416 past the end).

Writing (a write token of the repo's namespace in ``Authorization: Bearer``):

* ``POST /api/repos/create`` (409 when it exists), ``POST /api/validate-yaml`` (card metadata).
* ``POST /api/{type}/{repo}/preupload/{rev}``: ``uploadMode`` per file: "lfs" for files matching
  the repo's ``.gitattributes`` LFS patterns or of 10 MB and more, else "regular".
* ``POST /{prefix}{repo}.git/info/lfs/objects/batch`` (basic transfer) -> ``PUT /lfs-upload/{oid}``:
  the LFS store, checked against the sha256.
* ``POST /api/{type}/{repo}/commit/{rev}``: NDJSON header / file (base64) / lfsFile / deletedFile /
  deletedFolder; the branch moves only when the whole commit is valid (atomic, as on the Hub).
* ``POST /api/{type}/{repo}/branch/{branch}`` (``startingPoint``; 409 when it exists).

Errors: missing repos, revisions and files get 404 with ``X-Error-Code`` RepoNotFound /
RevisionNotFound / EntryNotFound (a private repo read without its owner's token: 401 RepoNotFound),
which `huggingface_hub` turns into its typed errors. An unknown token gets 401 "Invalid credentials
in Authorization header", a write without a token 401, a read-only token or another namespace 403.
Anything else is a plain 404 (e.g. ``GET /api/agent-harnesses``, telemetry clients ignore).

Clients: `run_client` runs code in a fresh Python pointed at the server (huggingface_hub reads
``HF_ENDPOINT`` at import, and `make test` sets ``HF_HUB_OFFLINE=1`` for the whole run).

For failure tests: ``fail_next("commit"|"lfs_upload", status)`` answers the next such request with
that status, and clearing ``lfs_gate`` (a `threading.Event`) holds LFS uploads (``lfs_upload_started``
is set when one arrives) until it is set again. Every request is logged in ``LocalHub.requests``
as "METHOD /path" (plus " Range: ..." when given).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/([a-z-]+)(?:/([^/]+)(/.*)?)?)?$")
_RESOLVE = re.compile(r"^/(datasets/|spaces/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_LFS_BATCH = re.compile(r"^/(datasets/|spaces/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_LFS_UPLOAD = re.compile(r"^/lfs-upload/([0-9a-f]{64})$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# The LFS patterns of the .gitattributes the Hub writes into a new repo (the part that matters here).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.parquet")
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024


def git_blob_sha(data: bytes) -> str:
    """The id git (and the Hub) gives a file: sha1 of ``b"blob <size>\\0" + data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error reply: HTTP status, message, and the Hub's ``X-Error-Code`` when it has one."""

    def __init__(self, message: str, code: str | None = None, status: int = 404, **body: Any) -> None:
        super().__init__(message)
        self.code, self.status, self.body = code, status, body


@dataclass
class Commit:
    sha: str
    parent: str | None
    files: dict[str, bytes]
    lfs: frozenset[str]  # paths stored through LFS
    message: str
    author: str
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> Commit:
        sha = self.branches.get(revision, revision)
        if sha not in self.commits:
            raise HubError(f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[sha]

    def history(self, revision: str) -> list[Commit]:
        commit, out = self.resolve(revision), []
        while commit is not None:
            out.append(commit)
            commit = self.commits.get(commit.parent) if commit.parent else None
        return out

    def lfs_patterns(self, revision: str) -> list[str]:
        text = self.resolve(revision).files.get(".gitattributes", b"").decode()
        return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line]


class LocalHub:
    """An in-memory Hub on ``http://127.0.0.1:<free port>``, served by a daemon thread."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.tokens: dict[str, tuple[str, str]] = {}  # token -> (user, "read" | "write")
        self.lfs_store: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[str] = []
        self.lfs_gate = threading.Event()
        self.lfs_gate.set()
        self.lfs_upload_started = threading.Event()
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def add_token(self, token: str, user: str, role: str = "write") -> None:
        if role not in ("read", "write"):
            raise ValueError(f"role must be 'read' or 'write', not {role!r}")
        self.tokens[token] = (user, role)

    def add_repo(
        self, repo_id: str, files: dict[str, bytes | str], repo_type: str = "dataset", private: bool = False
    ) -> str:
        """Create (or replace) a repo holding ``files`` in one commit on main; returns its sha."""
        if repo_type not in _URL_PREFIX:
            raise ValueError(f"repo_type must be one of {sorted(_URL_PREFIX)}, not {repo_type!r}")
        encoded = {path: data.encode() if isinstance(data, str) else data for path, data in files.items()}
        repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
        return self._commit(repo, "main", encoded, frozenset(), "initial commit", repo.owner)

    def commit_sha(self, repo_type: str, repo_id: str, revision: str = "main") -> str:
        return self.repos[(repo_type, repo_id)].resolve(revision).sha

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return dict(self.repos[(repo_type, repo_id)].resolve(revision).files)

    def history(self, repo_type: str, repo_id: str, revision: str = "main") -> list[Commit]:
        """The commits reachable from ``revision``, newest first."""
        return self.repos[(repo_type, repo_id)].history(revision)

    def fail_next(self, kind: str, status: int = 500) -> None:
        """Answer the next ``kind`` request ("commit" or "lfs_upload") with ``status``."""
        if kind not in ("commit", "lfs_upload"):
            raise ValueError(f"kind must be 'commit' or 'lfs_upload', not {kind!r}")
        self._failures[kind] = status

    def _commit(
        self, repo: Repo, branch: str, files: dict[str, bytes], lfs: frozenset[str], message: str, author: str
    ) -> str:
        parent = repo.branches.get(branch)
        content = {p: git_blob_sha(d) for p, d in sorted(files.items())}
        sha = hashlib.sha1(json.dumps([parent, content, message, time.time_ns()]).encode()).hexdigest()
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        repo.commits[sha] = Commit(sha, parent, files, lfs, message, author, date)
        repo.branches[branch] = sha
        return sha

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> LocalHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        self.lfs_gate.set()  # never leave a held upload behind
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lookups shared by the endpoints ----------------------------------------------------

    def _user(self, authorization: str | None) -> tuple[str, str] | None:
        """(user, role) of the bearer token; None without one; 401 for a token the Hub does not know."""
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError("Invalid credentials in Authorization header", status=401)
        return self.tokens[token]

    def _readable(self, repo_type: str, repo_id: str, user: tuple[str, str] | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        if repo.private and (user is None or user[0] != repo.owner):
            raise HubError(f"Repository not found: {repo_type} {repo_id}", "RepoNotFound", status=401)
        return repo

    @staticmethod
    def _check_write(namespace: str, user: tuple[str, str] | None) -> str:
        if user is None:
            raise HubError("You must be authenticated to write to a repository", status=401)
        name, role = user
        if role != "write" or name != namespace:
            why = "a read-only token" if role != "write" else f"user {name}"
            raise HubError(f"You don't have the rights to write to {namespace} with {why}", status=403)
        return name

    def _writable(self, repo_type: str, repo_id: str, user: tuple[str, str] | None) -> Repo:
        repo = self._readable(repo_type, repo_id, user)
        self._check_write(repo.owner, user)
        return repo

    def _take_failure(self, kind: str) -> None:
        with self._lock:
            status = self._failures.pop(kind, None)
        if status is not None:
            raise HubError(f"{kind} failed (injected by the test)", status=status)

    @staticmethod
    def _entries(commit: Commit, folder: str, recursive: bool) -> list[dict]:
        """Tree entries under ``folder`` ("" is the root), folders first, as the Hub lists them."""
        prefix = f"{folder}/" if folder else ""
        dirs, out = set(), []
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                dirs.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                out.append(_file_entry(path, commit.files[path], path in commit.lfs))
        folders = [
            {"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest()}
            for d in sorted(dirs)
        ]
        return folders + out


def _file_entry(path: str, data: bytes, lfs: bool) -> dict:
    entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha(data)}
    if lfs:
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


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

        def do_PUT(self) -> None:
            self._dispatch(send_body=True)

        def _dispatch(self, send_body: bool) -> None:
            url = urlsplit(self.path)
            rng = self.headers.get("Range")
            hub.requests.append(f"{self.command} {url.path}" + (f" Range: {rng}" if rng else ""))
            body = self.rfile.read(
                int(self.headers.get("Content-Length") or 0)
            )  # keeps the connection in sync
            try:
                user = hub._user(self.headers.get("Authorization"))
                if match := _API.match(url.path):
                    self._api(*match.groups(), query=parse_qs(url.query), body=body, user=user)
                elif (match := _RESOLVE.match(url.path)) and self.command in ("GET", "HEAD"):
                    prefix, repo_id, revision, path = match.groups()
                    repo = hub._readable(REPO_TYPES[(prefix or "models/").rstrip("/")], repo_id, user)
                    self._resolve(repo, unquote(revision), unquote(path), send_body)
                elif (match := _LFS_BATCH.match(url.path)) and self.command == "POST":
                    prefix, repo_id = match.groups()
                    repo_type = REPO_TYPES[(prefix or "models/").rstrip("/")]
                    self._lfs_batch(hub._writable(repo_type, repo_id, user), json.loads(body))
                elif (match := _LFS_UPLOAD.match(url.path)) and self.command == "PUT":
                    self._lfs_upload(match.group(1), body)
                elif url.path == "/api/repos/create" and self.command == "POST":
                    self._create_repo(json.loads(body), user)
                elif url.path == "/api/validate-yaml" and self.command == "POST":
                    self._json({"errors": [], "warnings": []})
                elif url.path == "/":
                    self._send(200, b"local hub\n", {"Content-Type": "text/plain"}, send_body)
                else:
                    raise HubError(f"No route for {self.command} {url.path}")
            except HubError as err:
                payload = json.dumps({"error": str(err), **err.body}).encode()
                headers = {"Content-Type": "application/json", "X-Error-Message": str(err)}
                if err.code:
                    headers["X-Error-Code"] = err.code
                self._send(err.status, payload, headers, send_body)

        # -- reading --------------------------------------------------------------------------

        def _api(self, kind, repo_id, action, revision, path, *, query, body, user) -> None:
            repo_type, revision = REPO_TYPES[kind], unquote(revision or "main")
            repo = hub._readable(repo_type, repo_id, user)
            if action in (None, "revision") and self.command == "GET":
                commit = repo.resolve(revision)
                siblings = [{"rfilename": p, "size": len(d)} for p, d in sorted(commit.files.items())]
                reply = {
                    "id": repo_id,
                    "sha": commit.sha,
                    "private": repo.private,
                    "disabled": False,
                    "siblings": siblings,
                }
            elif action == "tree" and self.command == "GET":
                commit, folder = repo.resolve(revision), unquote(path or "").strip("/")
                if folder and not any(p.startswith(folder + "/") for p in commit.files):
                    raise HubError(f"{folder} does not exist on {revision}", "EntryNotFound")
                reply = hub._entries(commit, folder, query.get("recursive", ["false"])[0].lower() == "true")
            elif action == "refs" and self.command == "GET":
                branches = [
                    {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                    for name, sha in sorted(repo.branches.items())
                ]
                reply = {"branches": branches, "tags": [], "converts": []}
            elif action == "commits" and self.command == "GET":
                reply = [
                    {
                        "id": c.sha,
                        "title": c.message,
                        "message": "",
                        "authors": [{"user": c.author}],
                        "date": c.date,
                    }
                    for c in repo.history(revision)
                ]
            elif self.command == "POST" and action in ("preupload", "commit", "branch"):
                return getattr(self, f"_{action}")(repo, revision, json_or_ndjson(body), user)
            else:
                raise HubError(f"{self.command} {action} is not implemented", status=405)
            self._json(reply)

        def _resolve(self, repo: Repo, revision: str, path: str, send_body: bool) -> None:
            commit = repo.resolve(revision)
            if path not in commit.files:
                raise HubError(f"{path} does not exist on {revision}", "EntryNotFound")
            data, status = commit.files[path], 200
            etag = hashlib.sha256(data).hexdigest() if path in commit.lfs else git_blob_sha(data)
            headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
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

        # -- writing --------------------------------------------------------------------------

        def _create_repo(self, payload: dict, user: tuple[str, str] | None) -> None:
            namespace = payload.get("organization") or (user[0] if user else "")
            repo_type = payload.get("type") or "model"
            repo_id = f"{namespace}/{payload['name']}"
            hub._check_write(namespace, user)
            url = f"{hub.url}/{_URL_PREFIX[repo_type]}{repo_id}"
            if (repo_type, repo_id) in hub.repos:
                raise HubError(f"You already created this {repo_type} repo: {repo_id}", status=409, url=url)
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = hub.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
            hub._commit(
                repo,
                "main",
                {".gitattributes": DEFAULT_GITATTRIBUTES.encode()},
                frozenset(),
                "initial commit",
                namespace,
            )
            self._json({"url": url, "name": repo_id, "id": repo_id})

        def _branch(self, repo: Repo, branch: str, payload: dict, user) -> None:
            hub._check_write(repo.owner, user)
            if branch in repo.branches:
                raise HubError(f"Reference refs/heads/{branch} already exists", status=409)
            repo.branches[branch] = repo.resolve(payload.get("startingPoint") or "main").sha
            self._json({})

        def _preupload(self, repo: Repo, revision: str, payload: dict, user) -> None:
            hub._check_write(repo.owner, user)
            commit, patterns = repo.resolve(revision), repo.lfs_patterns(revision)
            files = []
            for item in payload["files"]:
                path = item["path"]
                lfs = item["size"] >= LFS_SIZE_THRESHOLD or any(
                    fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in patterns
                )
                oid = git_blob_sha(commit.files[path]) if path in commit.files else None
                files.append(
                    {
                        "path": path,
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": oid,
                    }
                )
            self._json({"files": files, "commitOid": commit.sha})

        def _lfs_batch(self, repo: Repo, payload: dict) -> None:
            objects = []
            for item in payload["objects"]:
                entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
                if item["oid"] not in hub.lfs_store:  # already stored: no actions, the client skips it
                    entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{item['oid']}"}}
                objects.append(entry)
            self._json({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

        def _lfs_upload(self, oid: str, body: bytes) -> None:
            hub.lfs_upload_started.set()
            hub.lfs_gate.wait(timeout=60)
            hub._take_failure("lfs_upload")
            if hashlib.sha256(body).hexdigest() != oid:
                raise HubError(f"LFS upload does not match its oid {oid}", status=400)
            hub.lfs_store[oid] = body
            self._send(200, b"", {}, True)

        def _commit(self, repo: Repo, branch: str, lines: list[dict], user) -> None:
            author = hub._check_write(repo.owner, user)
            hub._take_failure("commit")
            if branch not in repo.branches:
                raise HubError(f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
            head = repo.resolve(branch)
            files, lfs, message = dict(head.files), set(head.lfs), "upload"
            for line in lines:  # build the new tree aside: the branch moves only if all of it is valid
                key, value = line["key"], line["value"]
                if key == "header":
                    message = value["summary"]
                    if value.get("parentCommit") not in (None, head.sha):
                        raise HubError("The parent commit is not the head of the branch", status=412)
                elif key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                    lfs.discard(value["path"])
                elif key == "lfsFile":
                    if value["oid"] not in hub.lfs_store:
                        raise HubError(
                            f"LFS object {value['oid']} of {value['path']} was never uploaded", status=422
                        )
                    files[value["path"]] = hub.lfs_store[value["oid"]]
                    lfs.add(value["path"])
                elif key in ("deletedFile", "deletedFolder"):
                    prefix = value["path"].rstrip("/") + "/"
                    for path in [
                        p
                        for p in files
                        if p == value["path"] or (key == "deletedFolder" and p.startswith(prefix))
                    ]:
                        del files[path]
                        lfs.discard(path)
                else:
                    raise HubError(f"Unknown commit operation {key!r}", status=400)
            sha = hub._commit(repo, branch, files, frozenset(lfs), message, author)
            url = f"{hub.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}"
            self._json({"commitOid": sha, "commitUrl": url, "success": True, "pullRequestUrl": None})

        # -- replies --------------------------------------------------------------------------

        def _json(self, reply: object, content_type: str = "application/json") -> None:
            self._send(200, json.dumps(reply).encode(), {"Content-Type": content_type}, True)

        def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            if send_body:
                self.wfile.write(body)

    return Handler


def json_or_ndjson(body: bytes) -> dict | list[dict]:
    """A JSON request body, or the list of objects of an NDJSON one (the commit endpoint)."""
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return [json.loads(line) for line in body.splitlines() if line.strip()]


# Set by `make test` (or a user's shell); a client process must see none of them.
CLIENT_ENV_CLEARED = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
)
_MARK = "@@RESULT@@"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def client_env(endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a client process: online, pointed at ``endpoint``, every cache under ``home``."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_CLEARED}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(home / "hf_home"),
        HF_DATASETS_CACHE=str(home / "datasets_cache"),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONIOENCODING="utf-8",
        # hf_scratchgpt importable from any cwd, installed or not.
        PYTHONPATH=os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")])),
        **extra,
    )
    return env


def run_client(endpoint: str, code: str, workdir: Path, timeout: float = 90, **extra_env: str) -> Any:
    """Run ``code`` in a fresh Python against ``endpoint``; it must set ``result`` (JSON-able), returned here."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = f"import json\n{textwrap.dedent(code)}\nprint({_MARK!r} + json.dumps(result))\n"
    # cwd=workdir: no local folder named like the repo id can shadow it.
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=client_env(endpoint, workdir, **extra_env),
        cwd=workdir,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )
    if proc.returncode != 0 or _MARK not in proc.stdout:
        raise AssertionError(
            f"client failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    return json.loads(proc.stdout.rsplit(_MARK, 1)[1])
