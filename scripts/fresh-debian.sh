#!/usr/bin/env bash
# The README's first command on a fresh Debian 12, so that a missing install step shows here and
# not on a user's machine (CI runs on the developer's machine, where packages installed by hand
# hide such steps: libclang once did).
#
# Makes a minimal Debian 12 root with debootstrap (from the Debian registry), puts this
# checkout's committed tree in it, bind-mounts the host's Rust toolchain read-only (a toolchain
# cannot come from a registry here; everything else does: apt, crates.io, PyPI), then in a chroot:
#   1. scripts/quickstart.sh (install-deps, build, the starter model, serve) in the background,
#      until the server answers a chat request;
#   2. the README's second command, scripts/test.sh (the whole suite: cargo, the SDK end-to-end
#      tests, the browser tests); with HEARTH_FRESH_QUICK=1 only scripts/install-deps.sh --tests
#      (checking that what the suite needs is there) and the fast adapter tests.
# Needs root (debootstrap, chroot, mounts). Called by scripts/test.sh; HEARTH_SKIP_FRESH=1 skips
# it there while iterating.
#   scripts/fresh-debian.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "error: scripts/fresh-debian.sh needs root (debootstrap, chroot, mounts)" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { apt-get update -qq >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2; }
command -v git >/dev/null || { echo "error: git is needed to export the committed tree" >&2; exit 1; }

work="${1:-$(mktemp -d /var/tmp/hearth-fresh.XXXXXX)}"
root="$work/root"
toolchain="$(rustc --print sysroot)"
mounts=()
cleanup() {
  local m
  for ((i=${#mounts[@]}-1; i>=0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
  # The server started in the chroot, if it still runs.
  [ -f "$root/tmp/serve.pid" ] && kill "$(cat "$root/tmp/serve.pid")" 2>/dev/null || true
  # Never delete through a mount that is still there (the host's /dev, the toolchain).
  if findmnt -rn -o TARGET | grep -q "^$root"; then
    echo "warning: mounts remain under $root; not deleting $work" >&2
  elif [ -z "${HEARTH_KEEP_FRESH:-}" ]; then
    rm -rf "$work"
  else
    echo "kept $work" >&2
  fi
}
trap cleanup EXIT
bind() { # bind SRC DEST [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"
  mounts+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

echo "fresh Debian 12: debootstrap into $root" >&2
debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
cp /etc/resolv.conf "$root/etc/resolv.conf"
# What every stock Debian 12 image has and minbase lacks: the CA certificates. And this
# machine's own network plumbing: the egress proxy's CAs (in /usr/local/share/ca-certificates)
# and pip's setting to trust them. Neither is a step of hearth's install.
mkdir -p "$root/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
chroot "$root" /bin/sh -c 'apt-get install -y -qq ca-certificates >/dev/null && update-ca-certificates >/dev/null' \
  || { echo "error: cannot install ca-certificates in the fresh root" >&2; exit 1; }
mkdir -p "$root/src/hearth"
git archive HEAD | tar -x -C "$root/src/hearth"
mount -t proc proc "$root/proc"; mounts+=("$root/proc")
bind /sys "$root/sys"
mkdir -p "$root/dev"; mount --rbind /dev "$root/dev"; mount --make-rslave "$root/dev"; mounts+=("$root/dev")
mkdir -p "$root/run"; mount -t tmpfs tmpfs "$root/run"; mounts+=("$root/run")
bind "$toolchain" "$root/opt/rust" ro

in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HEARTH_FRESH_ROOT=1 /bin/bash -c "$1"
}

echo "fresh Debian 12: the README's first command (scripts/quickstart.sh)" >&2
in_root 'cd /src/hearth && { scripts/quickstart.sh --host 127.0.0.1:11599 >/tmp/serve.log 2>&1 & echo $! >/tmp/serve.pid; }'
# The first build compiles llama.cpp: give it time, and fail at once if the script ends.
for _ in $(seq 3600); do
  if curl -sf http://127.0.0.1:11599/health >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(cat "$root/tmp/serve.pid")" 2>/dev/null; then
    echo "error: scripts/quickstart.sh ended before serving on a fresh Debian 12:" >&2
    tail -30 "$root/tmp/serve.log" >&2
    exit 1
  fi
  sleep 1
done
answer=$(curl -sf http://127.0.0.1:11599/api/chat -d '{"model":"smollm2","messages":[{"role":"user","content":"Hi"}],"stream":false,"options":{"num_predict":8}}') \
  || { echo "error: the fresh server did not answer a chat request" >&2; tail -30 "$root/tmp/serve.log" >&2; exit 1; }
echo "fresh Debian 12: the starter model answered: $answer" >&2
kill "$(cat "$root/tmp/serve.pid")" 2>/dev/null || true

# The Vulkan variant's install steps on the fresh root (the host's CI run builds and tests it;
# building it twice would add its 11 minutes again): what scripts/build.sh --gpu vulkan needs is
# there after scripts/install-deps.sh --gpu vulkan, and CMake finds it.
echo "fresh Debian 12: scripts/install-deps.sh --gpu vulkan" >&2
in_root 'cd /src/hearth && scripts/install-deps.sh --gpu vulkan \
  && for c in glslc vulkaninfo cmake; do command -v $c >/dev/null || { echo "error: scripts/install-deps.sh --gpu vulkan did not install $c" >&2; exit 1; }; done \
  && ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null \
  && h=$HOME/.cache/hearth/vulkan-headers/usr/include/vulkan/vulkan.hpp && [ -f "$h" ] \
  && mkdir -p /tmp/vkcheck && printf "cmake_minimum_required(VERSION 3.14)\nproject(c CXX)\nfind_package(Vulkan COMPONENTS glslc REQUIRED)\nfind_package(SPIRV-Headers CONFIG REQUIRED)\nmessage(STATUS \"Vulkan \${Vulkan_VERSION} at \${Vulkan_INCLUDE_DIRS}\")\n" >/tmp/vkcheck/CMakeLists.txt \
  && CMAKE_PREFIX_PATH=$HOME/.cache/hearth/vulkan-headers/usr cmake -S /tmp/vkcheck -B /tmp/vkcheck/b | grep "Vulkan 1.4"' \
  || { echo "error: the Vulkan build dependencies are incomplete on a fresh Debian 12" >&2; exit 1; }

if [ -z "${HEARTH_FRESH_QUICK:-}" ]; then
  echo "fresh Debian 12: the README's second command (scripts/test.sh, without the Vulkan build)" >&2
  in_root 'cd /src/hearth && HEARTH_SKIP_GPU=1 scripts/test.sh' || { echo "error: scripts/test.sh failed on a fresh Debian 12" >&2; exit 1; }
  echo "fresh Debian 12: ok" >&2
  exit 0
fi
echo "fresh Debian 12: the test suite's dependencies and the fast adapter tests" >&2
in_root 'cd /src/hearth && scripts/install-deps.sh --tests \
  && for c in python3 node npm chromium ip taskset; do command -v $c >/dev/null || { echo "error: scripts/install-deps.sh --tests did not install $c" >&2; exit 1; }; done \
  && python3 -m venv /tmp/venv-check \
  && cargo test --release --locked -p hearth-server -p hearth-runtime -p hearth-protocol' \
  || { echo "error: the test dependencies or the adapter tests failed on a fresh Debian 12" >&2; exit 1; }
echo "fresh Debian 12: ok" >&2
