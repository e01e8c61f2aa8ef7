"""A loopback HTTP file server with Range support (the hub's archives, as their hosts serve them).

python -m saeprobe.rehearsal.serve ROOT [--port 8765]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files under `directory`; answers `Range: bytes=a-[b]` with 206 + Content-Range,
    and a range past the end with 416 + `Content-Range: bytes */size`."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        match = RANGE.match(self.headers.get("Range", ""))
        if not path.is_file() or match is None:
            super().do_GET()
            return
        size = path.stat().st_size
        start = int(match.group(1))
        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with open(path, "rb") as fh:
            fh.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                block = fh.read(min(remaining, 1 << 20))
                if not block:
                    break
                self.wfile.write(block)
                remaining -= len(block)


def make_server(root: str | Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """A server for `root` on 127.0.0.1:`port` (0: any free port; see `server_address`)."""
    handler = functools.partial(RangeHandler, directory=os.fspath(root))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


@contextmanager
def serving(root: str | Path, port: int = 0) -> Iterator[str]:
    """Serve `root` in a background thread; yields the base URL (http://127.0.0.1:port)."""
    server = make_server(root, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the folder to serve (the hub's files/)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"{args.root}: no such folder; build the hub first (make rehearsal-hub)")
    server = make_server(args.root, args.port)
    print(f"serving {args.root} on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
