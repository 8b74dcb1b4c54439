"""A local HTTP server for the download tests: files from memory on 127.0.0.1, an ephemeral port.

``server.files[path] = bytes`` serves ``path``; ``server.behaviour[path]``
may be ``"error"`` (HTTP 500) or ``"truncate"`` (the full Content-Length is
announced, half the body is sent, then the connection is closed).
``server.requests`` lists the paths asked for. ``refused_url()`` gives a URL
on a port where nothing listens (connection refused).
"""

import http.server
import socket
import threading


class LocalServer:
    def __init__(self):
        self.files = {}
        self.behaviour = {}
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path
                server.requests.append(path)
                body = server.files.get(path)
                mode = server.behaviour.get(path)
                if mode == "error":
                    self.send_error(500, "Internal Server Error")
                    return
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def log_message(self, format, *args):  # keep the test output quiet
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self):
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def url(self, name):
        return self.base_url + name

    def serve(self, name, body, behaviour=None):
        self.files["/" + name] = body
        if behaviour is not None:
            self.behaviour["/" + name] = behaviour
        return self.url(name)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def refused_url(name="file"):
    """A URL on 127.0.0.1 where nothing listens: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"
