"""A dataset hub on loopback: the HTTP API `datasets` 5.2 / huggingface_hub 2.4 call, over a folder.

    root/<org>/<name>/<files...>   one dataset repository per folder (one revision: its commit id is a
                                   hash of the folder's listing)

    with FakeHub(root) as hub:      HF_ENDPOINT=hub.url in the environment of the code under test

Endpoints (read from huggingface_hub/hf_api.py, file_download.py and datasets/load.py):
    GET  /api/datasets/<repo>[/revision/<rev>]         dataset info: sha, siblings
    GET  /api/datasets/<repo>/tree/<rev>[/<path>]       folder listing (recursive=1: everything under it)
    POST /api/datasets/<repo>/paths-info/<rev>          info of the named paths (form field `paths`)
    HEAD|GET /datasets/<repo>/resolve/<rev>/<path>      the file (Range requests: 206), X-Repo-Commit, ETag
A missing repository answers 404 X-Error-Code: RepoNotFound, a missing file EntryNotFound: the codes
huggingface_hub turns into RepositoryNotFoundError / EntryNotFoundError, as the real hub does.
No xet headers: clients fall back to plain HTTP downloads. Every request is recorded in `hub.requests`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

REPO = r"(?P<repo>[^/]+/[^/]+)"
ROUTES = [
    ("tree", re.compile(rf"^/api/datasets/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")),
    ("paths_info", re.compile(rf"^/api/datasets/{REPO}/paths-info/(?P<rev>[^/]+)$")),
    ("info", re.compile(rf"^/api/datasets/{REPO}(?:/revision/(?P<rev>[^/]+))?$")),
    ("resolve", re.compile(rf"^/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")),
]


def _oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id, as the hub reports it


class FakeHub:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the repository view of the folder -------------------------------------------------------

    def repo_dir(self, repo: str) -> Path | None:
        d = self.root / repo
        return d if d.is_dir() else None

    def sha(self, repo: str) -> str:
        d = self.root / repo
        listing = "\n".join(f"{p.relative_to(d)}:{p.stat().st_size}" for p in sorted(d.rglob("*")) if p.is_file())
        return hashlib.sha1(listing.encode()).hexdigest()

    def entry(self, repo: str, rel: str) -> dict | None:
        p = self.root / repo / rel
        if p.is_file():
            data = p.read_bytes()
            return {"type": "file", "path": rel, "size": len(data), "oid": _oid(data)}
        if p.is_dir():
            return {"type": "directory", "path": rel, "oid": hashlib.sha1(rel.encode()).hexdigest()}
        return None

    def files(self, repo: str) -> list[str]:
        d = self.root / repo
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())

    # --- HTTP ---------------------------------------------------------------------------------------

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: the test output stays readable
                pass

            def _send(self, code: int, body: bytes = b"", headers: dict | None = None, error: str = "") -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if error:
                    self.send_header("X-Error-Code", error)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, obj) -> None:
                self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

            def _route(self):
                url = urlparse(self.path)
                hub.requests.append((self.command, unquote(url.path)))
                for name, rx in ROUTES:
                    m = rx.match(unquote(url.path))
                    if m:
                        return name, m.groupdict(), parse_qs(url.query)
                return None, {}, {}

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's names
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802
                name, args, query = self._route()
                if name is None:
                    return self._send(404, b"not found")
                repo = args["repo"]
                if hub.repo_dir(repo) is None:
                    return self._send(404, b"repository not found", error="RepoNotFound")
                if name == "info":
                    return self._json({"id": repo, "sha": hub.sha(repo), "private": False, "disabled": False,
                                       "gated": False, "siblings": [{"rfilename": f} for f in hub.files(repo)]})
                if name == "tree":
                    return self._tree(repo, (args.get("path") or "").strip("/"), "recursive" in query
                                      and query["recursive"][0].lower() in ("1", "true"))
                if name == "resolve":
                    return self._file(repo, args["path"])
                self._send(404, b"not found")

            def do_POST(self) -> None:  # noqa: N802
                name, args, _ = self._route()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if name != "paths_info" or hub.repo_dir(args["repo"]) is None:
                    return self._send(404, b"not found", error="RepoNotFound")
                paths = parse_qs(body).get("paths", [])
                self._json([e for p in paths if (e := hub.entry(args["repo"], p.strip("/"))) is not None])

            def _tree(self, repo: str, rel: str, recursive: bool) -> None:
                base = hub.root / repo / rel
                if not base.is_dir():
                    return self._send(404, b"no such folder", error="EntryNotFound")
                items = base.rglob("*") if recursive else base.iterdir()
                d = hub.root / repo
                self._json([hub.entry(repo, str(p.relative_to(d))) for p in sorted(items)])

            def _file(self, repo: str, rel: str) -> None:
                p = hub.root / repo / rel
                if not p.is_file():
                    return self._send(404, b"entry not found", error="EntryNotFound")
                data = p.read_bytes()
                headers = {"X-Repo-Commit": hub.sha(repo), "ETag": f'"{_oid(data)}"', "Accept-Ranges": "bytes",
                           "Content-Type": "application/octet-stream"}
                rng = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range") or "")
                if rng and data:
                    start = int(rng[1]) if rng[1] else max(0, len(data) - int(rng[2]))
                    end = min(int(rng[2]), len(data) - 1) if rng[1] and rng[2] else len(data) - 1
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    return self._send(206, data[start:end + 1], headers)
                self._send(200, data, headers)

        return Handler
