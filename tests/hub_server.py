"""A Hugging Face Hub stand-in on 127.0.0.1 for tests: the model repositories' API and file
endpoints that `huggingface_hub` downloads and uploads through (`HF_ENDPOINT` points at it).
Uploads take every file as a regular (non-LFS) blob in the commit's body."""

import base64
import hashlib
import http.server
import json
import threading
import urllib.parse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def official_file(model, prefix="audio_model.encoder."):
    """An encoder's weights under their official names and a prefix (as a release's wrapper
    names them), as the bytes of a safetensors file."""
    import keras
    import numpy as np
    from safetensors.numpy import save

    arrays = {prefix + name: np.array(param.to_official(keras.ops.convert_to_numpy(param.variable)), "float32",
                                      order="C") for name, param in model.official_parameters().items()}
    return save(arrays)


class HubServer:
    """Serves `repositories`: `{"owner/name": {"path/in/repo": bytes}}`. Use as a context manager;
    `url` is its endpoint and `requests` lists the paths it was asked for."""

    def __init__(self, repositories):
        self.repositories, self.requests = repositories, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(send_body=False)

            def do_GET(self):
                self.answer(send_body=True)

            def do_POST(self):
                path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
                server.requests.append(f"POST {path}")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = server.receive(path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def answer(self, send_body):
                path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
                server.requests.append(path)
                status, headers, body = server.respond(path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def respond(self, path):
        not_found = (404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b"{}")
        if path.startswith("/api/models/") and "/tree/" in path:  # the file listing
            repo = path[len("/api/models/"):].split("/tree/")[0]
            if repo not in self.repositories:
                return not_found
            entries = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                       for name, data in self.repositories[repo].items()]
            return 200, {"Content-Type": "application/json"}, json.dumps(entries).encode()
        if path.startswith("/api/models/"):
            repo = path[len("/api/models/"):].split("/revision/")[0]
            if repo not in self.repositories:
                return not_found
            siblings = [{"rfilename": name, "size": len(data)} for name, data in self.repositories[repo].items()]
            body = json.dumps({"id": repo, "sha": COMMIT, "siblings": siblings}).encode()
            return 200, {"Content-Type": "application/json"}, body
        repo, _, rest = path.lstrip("/").partition("/resolve/")
        filename = rest.partition("/")[2]
        if repo not in self.repositories:
            return not_found
        if filename not in self.repositories[repo]:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}, b"{}"
        data = self.repositories[repo][filename]
        etag = hashlib.sha256(data).hexdigest()
        return 200, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}, data

    def receive(self, path, body):
        """Repository creation, the pre-upload query and commits."""
        if path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
            self.repositories.setdefault(repo, {})
            return 200, {"url": f"{self.url}/{repo}"}
        repo, _, action = path[len("/api/models/"):].rpartition("/")[0].rpartition("/")
        if repo not in self.repositories:
            return 404, {"error": "Repository not found"}
        if action == "preupload":
            files = [{"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False}
                     for entry in json.loads(body)["files"]]
            return 200, {"files": files}
        if action == "commit":
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.repositories[repo][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return 200, {"commitUrl": f"{self.url}/{repo}/commit/{COMMIT}", "commitOid": COMMIT}
        return 404, {"error": f"no endpoint {path}"}

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
