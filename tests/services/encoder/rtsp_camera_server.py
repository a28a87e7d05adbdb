"""A stand-in IP camera for the RTSP tests: GStreamer's RTSP server (Debian's
gir1.2-gst-rtsp-server-1.0) on 127.0.0.1 serving a solid-colour picture as RTP/JPEG.

It runs under the system Python, whose python3-gi has the GObject bindings the project's
virtual environment lacks, so the tests start it as a subprocess:

    /usr/bin/python3 rtsp_camera_server.py --port 0 --size 128x96 --colour dc1e1e

Once the server listens it prints ``port N`` on stdout (N is the bound port when 0 was
asked for); the stream is at rtsp://127.0.0.1:N/cam until the process is killed.
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def media_pipeline(width: int, height: int, colour: str, fps: int) -> str:
    # I420 before jpegenc: RTP/JPEG (RFC 2435) carries only 4:2:0 / 4:2:2 JPEG, and
    # videotestsrc would otherwise negotiate a 4:4:4 format the payloader rejects.
    return (
        f"( videotestsrc is-live=true pattern=solid-color foreground-color=0xff{colour} "
        f"! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 "
        "! jpegenc quality=90 ! rtpjpegpay name=pay0 pt=26 )"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--size", default="128x96", help="WIDTHxHEIGHT, multiples of 8")
    parser.add_argument("--colour", default="dc1e1e", help="RRGGBB of the picture")
    parser.add_argument("--fps", type=int, default=5, help="frames per second")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(media_pipeline(width, height, args.colour, args.fps))
    factory.set_shared(True)  # one live pipeline for every client, like a camera
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print(f"port {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
