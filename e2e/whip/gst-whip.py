#!/usr/bin/python3
"""A WHIP publisher on GStreamer's webrtcbin, as an encoder speaks WHIP (RFC 9725).

Test sources (a moving ball and a tone) are encoded with VP8 or H.264 and Opus; the offer, with
every candidate gathered, goes in one POST; the answer comes back with `201 Created` and the
session's Location, which a DELETE ends when this process gets SIGTERM or SIGINT.

    gst-whip.py URL [--token T] [--codec vp8|h264]

Prints `posted <unix ms>` as the offer leaves, `published <location>` once answered, and exits
non-zero with the server's reason when the POST is refused. Needs Debian's python3-gst-1.0,
gir1.2-gst-plugins-bad-1.0 and gstreamer1.0-{plugins-good,plugins-bad,nice} (plus
gstreamer1.0-plugins-ugly for H.264).
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

VIDEO = {
    "vp8": "vp8enc deadline=1 target-bitrate=600000 keyframe-max-dist=60 ! rtpvp8pay pt=96 "
    "! application/x-rtp,media=video,encoding-name=VP8,payload=96",
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast bitrate=600 key-int-max=60 "
    "! video/x-h264,profile=constrained-baseline ! rtph264pay pt=102 config-interval=-1 "
    "! application/x-rtp,media=video,encoding-name=H264,payload=102",
}


def ecdsa_pem():
    """A self-signed P-256 certificate and its key in one PEM string, and its SHA-256
    fingerprint.

    GStreamer 1.22's DTLS makes an RSA certificate, whose cipher suites (ECDHE-RSA) a media
    server with ECDSA suites only (Sori's, like browsers' defaults) cannot use: the handshake
    fails ("Fatal SSL error"). Browsers and OBS use ECDSA certificates.
    """
    with tempfile.TemporaryDirectory() as d:
        key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "30", "-subj", "/CN=gst-whip", "-keyout", key, "-out", cert],
            check=True, capture_output=True,
        )
        out = subprocess.run(
            ["openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256"],
            check=True, capture_output=True, text=True,
        ).stdout
        return open(cert).read() + open(key).read(), out.strip().split("=", 1)[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--token")
    ap.add_argument("--codec", choices=sorted(VIDEO), default="vp8")
    args = ap.parse_args()

    Gst.init(None)
    pipeline = Gst.parse_launch(
        "webrtcbin name=w bundle-policy=max-bundle "
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 "
        f"! videoconvert ! queue ! {VIDEO[args.codec]} ! w. "
        "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample "
        "! queue ! opusenc ! rtpopuspay pt=111 "
        "! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! w."
    )
    webrtc = pipeline.get_by_name("w")
    pem, fingerprint = ecdsa_pem()


    def on_element(_bin, _sub, element):
        # Before it goes to READY, where it takes its DTLS connection (set later, the
        # connection would be made anew without the handler that accepts the peer).
        factory = element.get_factory()
        if factory is not None and factory.get_name() == "dtlsdec":
            element.set_property("pem", pem)

    webrtc.connect("deep-element-added", on_element)
    loop = GLib.MainLoop()
    session = {"location": None, "offered": False}

    def headers(extra):
        h = dict(extra)
        if args.token:
            h["Authorization"] = f"Bearer {args.token}"
        return h

    def fail(why):
        print(why, file=sys.stderr, flush=True)
        pipeline.set_state(Gst.State.NULL)
        sys.exit(1)

    def post_offer():
        offer = webrtc.get_property("local-description").sdp.as_text()
        # The offer names the certificate webrtcbin made before ours replaced it.
        offer = re.sub(r"a=fingerprint:[^\r\n]*", f"a=fingerprint:sha-256 {fingerprint}", offer)
        print(f"posted {int(time.time() * 1000)}", flush=True)
        request = urllib.request.Request(
            args.url, data=offer.encode(), method="POST",
            headers=headers({"Content-Type": "application/sdp"}),
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, answer = r.status, r.read().decode()
                location = r.headers.get("Location")
        except urllib.error.HTTPError as e:
            fail(f"refused: {e.code} {e.read().decode().strip()}")
        if status != 201 or not location:
            fail(f"unexpected answer: {status}, Location {location!r}")
        session["location"] = urllib.parse.urljoin(args.url, location)
        _, sdp = GstSdp.SDPMessage.new_from_text(answer)
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        webrtc.emit("set-remote-description", desc, Gst.Promise.new())
        print(f"published {session['location']}", flush=True)

    def on_gathering(element, _pspec):
        # Without trickle ICE the offer carries every candidate: it goes once gathering ends.
        state = element.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not session["offered"]:
            session["offered"] = True
            GLib.idle_add(post_offer)

    def on_offer(promise, element):
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply.has_field("offer") else None
        if offer is None:
            # The first offer can fail while the encoders' caps are not known yet; another
            # negotiation follows.
            return
        element.emit("set-local-description", offer, Gst.Promise.new())

    def on_negotiation_needed(element):
        i = 0
        while (t := element.emit("get-transceiver", i)) is not None:
            t.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
            i += 1
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, element))

    def stop(*_):
        if session["location"]:
            request = urllib.request.Request(session["location"], method="DELETE", headers=headers({}))
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    print(f"deleted {r.status}", flush=True)
            except urllib.error.HTTPError as e:
                print(f"delete refused: {e.code}", file=sys.stderr, flush=True)
        pipeline.set_state(Gst.State.NULL)
        loop.quit()

    webrtc.connect("on-negotiation-needed", on_negotiation_needed)
    webrtc.connect("notify::ice-gathering-state", on_gathering)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, stop)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message::error", lambda _b, m: fail(f"pipeline error: {m.parse_error()[0].message} ({m.parse_error()[1]})"))
    pipeline.set_state(Gst.State.PLAYING)
    loop.run()


if __name__ == "__main__":
    main()
