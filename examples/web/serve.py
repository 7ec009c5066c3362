"""Serve the browser example: python serve.py [--port N] (0: any free port).

Writes the fused demo graph (reciprocam+, shapes_vit.explain.onnx, next to this file) if it is missing,
then serves the repository root on localhost (the page loads ../images/*.png and
node_modules from there) and prints the page's URL.
"""

from __future__ import annotations

import argparse
import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GRAPH = HERE / "shapes_vit.explain.onnx"


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def end_headers(self):
        # cross-origin isolation lets onnxruntime-web use WASM threads
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args):  # quiet: errors only
        if args and str(args[1])[:1] in "45":
            super().log_message(format, *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    port = parser.parse_args().port
    if not GRAPH.exists():
        import onnx

        from reciprocam_onnx import fuse

        print(f"writing {GRAPH.relative_to(ROOT)} (reciprocam+ fused from models/shapes_vit.onnx)", flush=True)
        onnx.save(fuse(ROOT / "models" / "shapes_vit.onnx", preset="reciprocam+"), GRAPH)
    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=str(ROOT)))
    print(f"http://127.0.0.1:{server.server_address[1]}/examples/web/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
