"""
A small HTTP server on 127.0.0.1 that speaks the part of the Hugging Face Hub's API that huggingface_hub
and datasets use to read a dataset repository, so that fetch_arxiv.py's real download path (HfApi,
HfFileSystem, hf_hub_download, datasets.load_dataset) runs offline against it with HF_ENDPOINT set.

Endpoints (as the Hub serves them; revisions and paths are URL-quoted by the clients):
    GET  /api/datasets/{ns}/{name}[/revision/{rev}]          repository info: sha, siblings
    GET  /api/datasets/{ns}/{name}/tree/{rev}[/{path}]       tree listing (?recursive=, ?expand=)
    POST /api/datasets/{ns}/{name}/paths-info/{rev}          info of given paths
    HEAD/GET /datasets/{ns}/{name}/resolve/{rev}/{path}      small files: 200; LFS files: 302 to /lfs/<sha256>
    HEAD/GET /lfs/{sha256}                                   the LFS store (the Hub's CDN, on a second port),
                                                             ranged reads
Errors carry the Hub's X-Error-Code header (RepoNotFound, RevisionNotFound, EntryNotFound).

Every request is recorded in HubEmulator.requests as (method, raw path) for the tests to inspect.
"""
import hashlib
import http.server
import json
import re
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".parquet", ".arrow", ".bin")


def git_blob_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    """A dataset repository: named refs pointing at commits, each commit a full {path: bytes} tree."""

    def __init__(self, repo_id):
        self.repo_id = repo_id
        self.refs = {}      # ref name -> commit sha
        self.commits = {}   # sha -> {"files": {path: bytes}, "date": str, "title": str}

    def commit(self, ref, files, title="update"):
        """Add a commit of the whole tree `files` on branch `ref`; returns its 40-hex sha."""
        h = hashlib.sha1(json.dumps([self.repo_id, ref, title, len(self.commits),
                                     sorted((p, hashlib.sha256(b).hexdigest()) for p, b in files.items())]).encode())
        sha = h.hexdigest()
        self.commits[sha] = {"files": dict(files), "date": "2026-01-%02dT00:00:00.000Z" % (1 + len(self.commits)),
                             "title": title}
        self.refs[ref] = sha
        return sha

    def resolve(self, rev):
        if rev in self.refs:
            return self.refs[rev]
        if rev in self.commits:
            return rev
        return None


class HubEmulator:
    """Start with .start(); .url is the HF_ENDPOINT to use. Add repositories with .add_repo()."""

    def __init__(self, host="127.0.0.1", port=0):
        self.repos = {}
        self.lfs = {}        # sha256 -> bytes
        self.requests = []   # (method, path)
        self._lock = threading.Lock()
        emulator = self

        class Handler(_Handler):
            hub = emulator

        # the hub's API and its LFS store (the CDN) on two ports: huggingface_hub follows a redirect only
        # within one origin, and reads an LFS file's metadata from the hub's 302 itself, as on the real Hub
        self.servers = [http.server.ThreadingHTTPServer((host, p), Handler) for p in (port, 0)]
        for srv in self.servers:
            srv.daemon_threads = True
        self.url = f"http://{host}:{self.servers[0].server_address[1]}"
        self.cdn_url = f"http://{host}:{self.servers[1].server_address[1]}"

    def add_repo(self, repo_id):
        self.repos[repo_id] = Repo(repo_id)
        return self.repos[repo_id]

    def start(self):
        for srv in self.servers:
            threading.Thread(target=srv.serve_forever, daemon=True).start()
        return self

    def stop(self):
        for srv in self.servers:
            srv.shutdown()
            srv.server_close()

    def log(self, method, path):
        with self._lock:
            self.requests.append((method, path))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub = None  # set by HubEmulator

    def log_message(self, *args):  # quiet
        pass

    # --- helpers
    def _send(self, code, body=b"", headers=None, head_only=False):
        self.send_response(code)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head_only and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, code=200, head_only=False):
        self._send(code, json.dumps(obj).encode(), {"Content-Type": "application/json"}, head_only)

    def _error(self, code, error_code, message):
        self._send(code, json.dumps({"error": message}).encode(),
                   {"Content-Type": "application/json", "X-Error-Code": error_code, "X-Error-Message": message})

    def _repo_rev(self, ns, name, rev):
        repo = self.hub.repos.get(f"{unquote(ns)}/{unquote(name)}")
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None, None
        sha = repo.resolve(unquote(rev))
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(rev)}")
            return None, None
        return repo, sha

    def _entry(self, repo, sha, path, expand):
        files = repo.commits[sha]["files"]
        if path in files:
            data = files[path]
            e = {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": path}
            if path.endswith(LFS_SUFFIXES):
                e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        elif any(f.startswith(path + "/") for f in files) or path == "":
            e = {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        else:
            return None
        if expand:
            c = repo.commits[sha]
            e["lastCommit"] = {"id": sha, "title": c["title"], "date": c["date"]}
            if e["type"] == "file":
                e["securityFileStatus"] = {"status": "safe"}
        return e

    def _tree(self, repo, sha, path, recursive, expand):
        files = repo.commits[sha]["files"]
        base = path.strip("/")
        names = set()
        for f in files:
            if base and not f.startswith(base + "/"):
                continue
            rest = f[len(base) + 1:] if base else f
            parts = rest.split("/")
            if recursive:
                for k in range(1, len(parts) + 1):
                    names.add("/".join(([base] if base else []) + parts[:k]))
            else:
                names.add("/".join(([base] if base else []) + parts[:1]))
        return [self._entry(repo, sha, n, expand) for n in sorted(names)]

    def _serve_bytes(self, data, etag, extra=None, head_only=False):
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{etag}"', "Content-Type": "application/octet-stream",
                   **(extra or {})}
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng else None
        if m and not head_only:
            start = int(m.group(1)) if m.group(1) else max(len(data) - int(m.group(2)), 0)
            end = int(m.group(2)) if m.group(1) and m.group(2) else len(data) - 1
            end = min(end, len(data) - 1)
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            part = data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(206, part, headers)
            return
        headers["Content-Length"] = str(len(data))
        self._send(200, data, headers, head_only)

    # --- routes
    def _route(self, method):
        self.hub.log(method, self.path)
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        truthy = lambda v: str(v).lower() in ("1", "true")
        p = url.path
        if m := re.fullmatch(r"/api/datasets/([^/]+)/([^/]+)(?:/revision/([^/]+))?", p):
            repo, sha = self._repo_rev(m.group(1), m.group(2), m.group(3) or "main")
            if repo is None:
                return
            c = repo.commits[sha]
            return self._json({"_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                               "author": repo.repo_id.split("/")[0], "sha": sha, "lastModified": c["date"],
                               "private": False, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                               "tags": [], "cardData": {}, "createdAt": "2026-01-01T00:00:00.000Z",
                               "siblings": [{"rfilename": f} for f in sorted(c["files"])]},
                              head_only=method == "HEAD")
        if m := re.fullmatch(r"/api/datasets/([^/]+)/([^/]+)/tree/([^/]+)(/.*)?", p):
            repo, sha = self._repo_rev(m.group(1), m.group(2), m.group(3))
            if repo is None:
                return
            path = unquote(m.group(4) or "").strip("/")
            if path and self._entry(repo, sha, path, False) is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist on {m.group(3)}")
            return self._json(self._tree(repo, sha, path, truthy(q.get("recursive")), truthy(q.get("expand"))))
        if method == "POST" and (m := re.fullmatch(r"/api/datasets/([^/]+)/([^/]+)/paths-info/([^/]+)", p)):
            repo, sha = self._repo_rev(m.group(1), m.group(2), m.group(3))
            if repo is None:
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            try:
                req = json.loads(body)
            except json.JSONDecodeError:
                req = {k: v for k, v in parse_qs(body).items()}
                req["expand"] = truthy((req.get("expand") or ["false"])[-1])
            paths = req.get("paths") or []
            paths = [paths] if isinstance(paths, str) else paths
            out = [e for e in (self._entry(repo, sha, x.strip("/"), req.get("expand")) for x in paths) if e]
            return self._json(out)
        if m := re.fullmatch(r"/datasets/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)", p):
            repo, sha = self._repo_rev(m.group(1), m.group(2), m.group(3))
            if repo is None:
                return
            path = unquote(m.group(4))
            data = repo.commits[sha]["files"].get(path)
            if data is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist on {unquote(m.group(3))}")
            commit = {"X-Repo-Commit": sha}
            if path.endswith(LFS_SUFFIXES):  # LFS: the Hub answers with a redirect to its CDN
                digest = hashlib.sha256(data).hexdigest()
                self.hub.lfs[digest] = data
                return self._send(302, b"", {**commit, "Location": f"{self.hub.cdn_url}/lfs/{digest}",
                                             "X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(data)),
                                             "ETag": f'"{git_blob_oid(data)}"'})
            return self._serve_bytes(data, git_blob_oid(data), commit, head_only=method == "HEAD")
        if m := re.fullmatch(r"/lfs/([0-9a-f]{64})", p):
            data = self.hub.lfs.get(m.group(1))
            if data is None:
                return self._send(404)
            return self._serve_bytes(data, m.group(1), head_only=method == "HEAD")
        self._error(404, "EntryNotFound", f"no route for {method} {p}")

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")


# ----------------------------------------------------------------------------------------------------
# the arxiv-classification repository, shaped like the real one

SCRIPT = b'''"""arXiv classification dataset (loading script; datasets >= 4 refuses to run it)."""
import datasets
_URL = "https://example.invalid/arxiv.zip"
class ArxivClassificationDataset(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIGS = [datasets.BuilderConfig(name="default"), datasets.BuilderConfig(name="no_ref")]
'''
README = b"""---
task_categories: [text-classification]
---
# arxiv-classification (emulated)
"""


def parquet_bytes(rows, names):
    """A parquet file written by datasets, ClassLabel names in its schema, of rows [(text, label)]."""
    import io

    import datasets
    datasets.disable_progress_bars()
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"text": [r[0] for r in rows], "label": [r[1] for r in rows]}, features=feats)
    buf = io.BytesIO()
    ds.to_parquet(buf)
    return buf.getvalue()


def arxiv_rows(config, split, n, names, version=1):
    """Distinguishable texts: the config, split, row and label are written into every text."""
    rows = []
    for i in range(n):
        label = (i * 7 + len(split)) % len(names)
        body = " ".join(f"word{(i * 31 + j) % 97}" for j in range(60 + 13 * (i % 5)))
        text = f"[{config} v{version}] {split} paper {i} in {names[label]}. {body}"
        if config == "default":
            text += " References: [1] A. Author, Some paper, 1999."
        rows.append((text, label))
    return rows


def add_arxiv_repo(hub, names, repo_id="ccdv/arxiv-classification", rows_per_split=(30, 12, 12)):
    """main: README.md + the loading script; refs/convert/parquet: two commits (v1, then v2 with one more
    row per split), {default,no_ref}/{split}/0000.parquet. Returns (repo, {"v1": sha, "v2": sha})."""
    repo = hub.add_repo(repo_id)
    repo.commit("main", {"README.md": README, "arxiv-classification.py": SCRIPT, ".gitattributes": b"*.parquet lfs\n"},
                title="initial")
    shas = {}
    for version in (1, 2):
        files = {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"}
        for config in ("default", "no_ref"):
            for split, n in zip(("train", "validation", "test"), rows_per_split):
                files[f"{config}/{split}/0000.parquet"] = parquet_bytes(
                    arxiv_rows(config, split, n + version - 1, names, version), names)
        shas[f"v{version}"] = repo.commit("refs/convert/parquet", files, title=f"Update parquet files v{version}")
    return repo, shas


def add_parquet_repo(hub, names, repo_id="someone/arxiv-parquet", rows_per_split=(22, 11, 11)):
    """A dataset uploaded as parquet with configs in its card (what push_to_hub writes): no script."""
    repo = hub.add_repo(repo_id)
    card = ["---", "configs:"]
    files = {}
    for config in ("default", "no_ref"):
        card += [f"- config_name: {config}", "  data_files:"]
        for split, n in zip(("train", "validation", "test"), rows_per_split):
            path = f"{config}/{split}-00000-of-00001.parquet"
            files[path] = parquet_bytes(arxiv_rows(config, split, n, names), names)
            card += [f"  - split: {split}", f"    path: {path}"]
    card += ["---", "# arxiv, as parquet", ""]
    files["README.md"] = "\n".join(card).encode()
    repo.commit("main", files, title="parquet upload")
    return repo


def main():
    """Serve the emulated repositories until interrupted (for trying fetch_arxiv.py by hand):
        python tests/hub_emulator.py 8765 &  HF_ENDPOINT=http://127.0.0.1:8765 python fetch_arxiv.py"""
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    import store as st
    hub = HubEmulator(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    _, shas = add_arxiv_repo(hub, st.CATEGORIES)
    add_parquet_repo(hub, st.CATEGORIES)
    print(f"HF_ENDPOINT={hub.url}  (refs/convert/parquet commits: {shas})", flush=True)
    hub.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
