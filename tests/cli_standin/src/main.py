"""Stand-in for the upstream tiktok-live-recorder CLI (Michele0303, 5eea05a), for tests.

Same flags, file names, log lines and exit behaviour as the upstream in manual mode, and the
same faults, written anew (none of its code): it exits 0 on failures (they are only logged),
its stream GET has no timeout (a stalled socket hangs it), it appends every reconnection's
response to one file (a second FLV header), it keeps up to 512 KB in memory and has no
SIGTERM handler (a SIGTERM loses them, no cleanup), and at the end it stream-copies the
joined file to MP4 with ffmpeg from PATH. Like the upstream it calls https://webcast.tiktok.com;
the tests' sitecustomize (../site) sends that to the fake TikTok.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import requests

WEBCAST = "https://webcast.tiktok.com"
BUFFER = 512 * 1024


def log(message, error=False):
    prefix = "[!]" if error else "[*]"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sys.stderr.write(f"{prefix} {stamp} - {message}\n")
    sys.stderr.flush()


def parse_args():
    parser = argparse.ArgumentParser(description="TikTok Live Recorder (stand-in)")
    for flag in ("-url", "-user", "-room_id", "-proxy", "-output", "-bitrate"):
        parser.add_argument(flag, dest=flag[1:])
    parser.add_argument("-mode", dest="mode", default="manual")
    parser.add_argument("-automatic_interval", dest="automatic_interval", type=int, default=5)
    parser.add_argument("-duration", dest="duration", type=int, default=None)
    parser.add_argument("-telegram", dest="telegram", action="store_true")
    parser.add_argument("-no-update-check", dest="update_check", action="store_false")
    return parser.parse_args()


def room_info(session, room_id):
    url = f"{WEBCAST}/webcast/room/info/?aid=1988&room_id={room_id}"
    return session.get(url, timeout=10).json()


def is_alive(session, room_id):
    url = f"{WEBCAST}/webcast/room/check_alive/?aid=1988&region=CH&room_ids={room_id}"
    data = session.get(url, timeout=10).json().get("data") or []
    return bool(data) and data[0].get("alive", False)


def live_url(info):
    stream_url = (info.get("data") or {}).get("stream_url") or {}
    pull = (stream_url.get("live_core_sdk_data") or {}).get("pull_data") or {}
    levels = {q["sdk_key"]: q["level"] for q in (pull.get("options") or {}).get("qualities", [])}
    best, best_level = None, -1
    for key, entry in json.loads(pull.get("stream_data") or "{}").get("data", {}).items():
        if levels.get(key, -1) > best_level:
            best_level, best = levels.get(key, -1), (entry.get("main") or {}).get("flv")
    return best


def record(session, args, room_id):
    info = room_info(session, room_id)
    user = ((info.get("data") or {}).get("owner") or {}).get("display_id")
    if user is None:
        log("Username / RoomID not found or the user has never been in live.", error=True)
        return
    log(f"USERNAME: {user}")
    log(f"ROOM_ID:  {room_id}")
    if not is_alive(session, room_id):
        log(f"@{user}: The user is not hosting a live stream at the moment.", error=True)
        return
    url = live_url(info)
    if not url:
        log("Unable to retrieve live streaming url. Please try again later.", error=True)
        return
    name = f"TK_{user}_{time.strftime('%Y.%m.%d_%H-%M-%S')}_flv.mp4"
    output = os.path.join(args.output, name) if args.output else name
    log(
        f"Started recording for {args.duration} seconds "
        if args.duration
        else "Started recording..."
    )
    buffer = bytearray()
    with open(output, "wb") as out:
        stop = False
        while not stop:
            try:
                if not is_alive(session, room_id):
                    log("User is no longer live. Stopping recording.")
                    break
                started = time.time()
                response = requests.get(url, stream=True)  # no timeout, as the upstream
                for chunk in response.iter_content(chunk_size=4096):
                    buffer.extend(chunk)
                    if len(buffer) >= BUFFER:
                        out.write(buffer)
                        buffer.clear()
                    if args.duration and time.time() - started >= args.duration:
                        stop = True
                        break
            except requests.RequestException as exc:
                log(f"Network hiccup, retrying: {exc}")
                time.sleep(2)
            finally:
                if buffer:
                    out.write(buffer)
                    buffer.clear()
                out.flush()
    log(f"Recording finished: {os.path.abspath(output)}\n")
    converted = output.replace("_flv.mp4", ".mp4")
    log(f"Converting {output} to MP4 format...")
    run = subprocess.run(
        ["ffmpeg", "-y", "-i", output, "-c", "copy", converted], capture_output=True
    )
    if run.returncode != 0:
        log("ffmpeg conversion failed: " + run.stderr.decode(errors="replace")[-300:], error=True)
        return
    os.remove(output)
    log(f"Finished converting {os.path.abspath(converted)}\n")


def main():
    print("  TikTok Live Recorder (stand-in)\n", flush=True)  # noqa: T201  (its banner)
    try:
        subprocess.run(["ffmpeg"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    except FileNotFoundError:
        log("FFmpeg binary is not installed", error=True)
        sys.exit(1)
    args = parse_args()
    try:
        log("Skipped update check\n" if not args.update_check else "Checking for updates...\n")
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cookies.json")
        with open(path) as f:
            cookies = json.load(f)
        session = requests.Session()
        session.cookies.update(cookies)
        if args.proxy:
            session.proxies.update({"http": args.proxy, "https": args.proxy})
        if not args.room_id:
            log("Error extracting RoomID", error=True)
            return
        record(session, args, args.room_id)
    except Exception as exc:
        log(f"Generic Error: {exc}", error=True)


if __name__ == "__main__":
    main()
