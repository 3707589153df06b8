#!/usr/bin/env python3
"""A local Hugging Face Hub for Candela's tests: the endpoints hub clients call, served
from directories on disk, with the hub's error codes and fault injection.

The real hub cannot be reached from the machines Candela is tested on; this server speaks
its file protocol so the client code under test is the real one (point HF_ENDPOINT here):

  GET  /api/models/{org}/{name}[/revision/{rev}][?blobs=true]   sha + siblings (size, blobId, lfs)
  HEAD|GET /{org}/{name}/resolve/{rev}/{path}                     ETag / X-Linked-Etag / X-Linked-Size /
                                                                  X-Repo-Commit; LFS files redirect
                                                                  (302) to /_cdn/<sha256>, small ones
                                                                  are served directly; Range honoured
  errors: X-Error-Code RepoNotFound | RevisionNotFound | EntryNotFound | GatedRepo, and 401
          "Invalid credentials in Authorization header" for unknown tokens

Test controls (not part of the hub protocol):
  GET  /_admin/stats                       every request served: method, path, status, body bytes
  POST /_admin/faults {"file": F, "cut_after": N, "times": K}
                                           the next K downloads of F drop the connection after N
                                           body bytes
  POST /_admin/reset                       forget stats and faults

Usage: fake_hub.py CONFIG.json   (prints "PORT <n>" once listening; port 0 picks a free one)
CONFIG: {"port": 0, "host": "127.0.0.1",
         "tokens": ["hf_good"],                 # accepted tokens
         "repos": {"org/name": {"revisions": {"main": DIR, "v1": DIR2},
                                "private": false, "gated": false, "granted": ["hf_good"]}}}
Files under DIR (recursively, symlinks followed) are the repository's files at that revision.
Only the Python standard library is used.
"""
import hashlib
import json
import os
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_MIN = 10 * 1024 * 1024
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")
CHUNK = 1 << 20


def git_blob_sha1(path, size):
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class Repo:
    def __init__(self, repo_id, spec):
        self.id = repo_id
        self.private = spec.get("private", False)
        self.gated = spec.get("gated", False)
        self.granted = set(spec.get("granted", []))
        self.revisions = {}  # name -> commit
        self.commits = {}  # commit -> {path: file}
        for name, root in spec["revisions"].items():
            files = {}
            for dirpath, _, names in os.walk(root, followlinks=True):
                for n in sorted(names):
                    full = os.path.join(dirpath, n)
                    rel = os.path.relpath(full, root).replace(os.sep, "/")
                    size = os.path.getsize(full)
                    lfs = size >= LFS_MIN or rel.endswith(LFS_SUFFIXES)
                    files[rel] = {
                        "path": full,
                        "size": size,
                        "blob_id": git_blob_sha1(full, size),
                        "sha256": sha256(full) if lfs else None,
                    }
            digest = hashlib.sha1()
            digest.update(repo_id.encode())
            for rel in sorted(files):
                digest.update(rel.encode() + files[rel]["blob_id"].encode())
            commit = digest.hexdigest()
            self.revisions[name] = commit
            self.commits[commit] = files

    def commit_of(self, rev):
        if rev in self.commits:
            return rev
        return self.revisions.get(rev)


class Hub:
    def __init__(self, config):
        self.tokens = set(config.get("tokens", []))
        self.repos = {rid: Repo(rid, spec) for rid, spec in config["repos"].items()}
        self.lock = threading.Lock()
        self.stats = []
        self.faults = {}  # file -> [cut_after, times]
        self.blobs = {}  # sha256 -> file
        for repo in self.repos.values():
            for files in repo.commits.values():
                for f in files.values():
                    if f["sha256"]:
                        self.blobs[f["sha256"]] = f


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub = None

    def log_message(self, fmt, *args):  # quiet; the stats endpoint tells what happened
        pass

    # -- helpers ---------------------------------------------------------------------
    def record(self, status, body_bytes):
        with self.hub.lock:
            self.hub.stats.append(
                {"method": self.command, "path": urllib.parse.unquote(self.path.split("?")[0]),
                 "status": status, "bytes": body_bytes,
                 "range": self.headers.get("Range")})

    def reply(self, status, body=b"", headers=None, content_type="application/json"):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.record(status, len(body) if self.command != "HEAD" else 0)

    def error(self, status, code, message):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self.reply(status, json.dumps({"error": message}).encode(), headers)

    def token(self):
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def authorize(self, repo, download):
        """None when allowed, else (status, code, message) as the hub answers."""
        token = self.token()
        if token is not None and token not in self.hub.tokens:
            return 401, None, "Invalid credentials in Authorization header"
        if repo is None or (repo.private and token is None):
            return (404 if token else 401), "RepoNotFound", "Repository not found"
        if download and repo.gated and token not in repo.granted:
            message = ("Access to model %s is restricted. You must have access to it and be "
                       "authenticated to access it. Please log in." % repo.id)
            return (403 if token else 401), "GatedRepo", message
        return None

    # -- endpoints -------------------------------------------------------------------
    def do_GET(self):
        self.route()

    def do_HEAD(self):
        self.route()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/_admin/faults":
            with self.hub.lock:
                self.hub.faults[body["file"]] = [int(body["cut_after"]), int(body.get("times", 1))]
            return self.reply(200, b"{}")
        if self.path == "/_admin/reset":
            with self.hub.lock:
                self.hub.stats.clear()
                self.hub.faults.clear()
            return self.reply(200, b"{}")
        self.error(404, None, "no such endpoint")

    def route(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/")[1:]]
        if parts[:2] == ["_admin", "stats"]:
            with self.hub.lock:
                body = json.dumps(self.hub.stats).encode()
            return self.reply(200, body)
        if parts[:1] == ["_cdn"] and len(parts) == 2:
            f = self.hub.blobs.get(parts[1])
            if f is None:
                return self.error(404, None, "no such blob")
            return self.send_file(f, {"ETag": '"%s"' % parts[1]})
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = "/".join(parts[2:4])
            rev = "main"
            if len(parts) >= 6 and parts[4] == "revision":
                rev = "/".join(parts[5:])
            return self.model_info(repo_id, rev, query.get("blobs") == ["true"])
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id = "/".join(parts[:2])
            return self.resolve(repo_id, parts[3], "/".join(parts[4:]))
        self.error(404, None, "no such endpoint")

    def model_info(self, repo_id, rev, blobs):
        repo = self.hub.repos.get(repo_id)
        denied = self.authorize(repo, download=False)
        if denied:
            return self.error(*denied)
        commit = repo.commit_of(rev)
        if commit is None:
            return self.error(404, "RevisionNotFound", "Invalid rev id: %s" % rev)
        siblings = []
        for rel, f in sorted(repo.commits[commit].items()):
            entry = {"rfilename": rel}
            if blobs:
                entry["size"] = f["size"]
                entry["blobId"] = f["blob_id"]
                if f["sha256"]:
                    entry["lfs"] = {"sha256": f["sha256"], "size": f["size"], "pointerSize": 134}
            siblings.append(entry)
        info = {"_id": commit[:24], "id": repo_id, "modelId": repo_id, "sha": commit,
                "private": repo.private, "gated": "auto" if repo.gated else False,
                "disabled": False, "tags": [], "lastModified": "2026-12-01T00:00:00.000Z",
                "siblings": siblings}
        self.reply(200, json.dumps(info).encode())

    def resolve(self, repo_id, rev, path):
        repo = self.hub.repos.get(repo_id)
        denied = self.authorize(repo, download=True)
        if denied:
            return self.error(*denied)
        commit = repo.commit_of(rev)
        if commit is None:
            return self.error(404, "RevisionNotFound", "Invalid rev id: %s" % rev)
        f = repo.commits[commit].get(path)
        if f is None:
            return self.error(404, "EntryNotFound", "%s does not exist at %s" % (path, rev))
        if f["sha256"]:
            host = self.headers.get("Host", "127.0.0.1")
            headers = {"Location": "http://%s/_cdn/%s" % (host, f["sha256"]),
                       "X-Repo-Commit": commit, "X-Linked-Etag": '"%s"' % f["sha256"],
                       "X-Linked-Size": str(f["size"]), "ETag": '"%s"' % f["blob_id"]}
            return self.reply(302, b"", headers, content_type="text/plain")
        self.send_file(f, {"X-Repo-Commit": commit, "ETag": '"%s"' % f["blob_id"]})

    def send_file(self, f, headers):
        size = f["size"]
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a) if a else 0
            end = min(int(b), size - 1) if b else size - 1
            if start >= size:
                return self.reply(416, b"", {"Content-Range": "bytes */%d" % size})
            status = 206
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, size)
        length = end - start + 1
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return self.record(status, 0)
        cut = None
        with self.hub.lock:
            for name, fault in self.hub.faults.items():
                if f["path"].endswith("/" + name) and fault[1] > 0:
                    fault[1] -= 1
                    cut = fault[0]
        sent = 0
        with open(f["path"], "rb") as src:
            src.seek(start)
            while sent < length:
                n = min(CHUNK, length - sent)
                if cut is not None:
                    n = min(n, cut - sent)
                    if n <= 0:
                        self.record(status, sent)
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                block = src.read(n)
                if not block:
                    break
                self.wfile.write(block)
                sent += len(block)
        self.record(status, sent)


def main():
    with open(sys.argv[1]) as f:
        config = json.load(f)
    Handler.hub = Hub(config)
    server = ThreadingHTTPServer((config.get("host", "127.0.0.1"), config.get("port", 0)), Handler)
    server.daemon_threads = True
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
