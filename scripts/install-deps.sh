#!/usr/bin/env bash
# Installs the system packages SandboxVM needs on Debian 12 (run as root). Idempotent: installs only what is missing.
set -euo pipefail

packages=(
  bubblewrap      # process runtime
  libseccomp2     # process runtime: its seccomp filter is compiled with libseccomp
  util-linux      # setpriv, setsid
  mmdebstrap      # template rootfs builds
  busybox-static  # the guest initramfs; tests: the shell of a small OCI test image
  umoci skopeo    # templates from OCI images (skopeo fetches, umoci unpacks)
  e2fsprogs       # mkfs.ext4 -d for VM root disks
  kmod            # modinfo: guest kernel module order
  gcc binutils libc6-dev  # NativeAOT link of the guest agent (clang is used instead when present)
  python3
  python3-venv python3-setuptools python3-wheel  # the Python SDK's offline install (sdk/python/README.md)
  python3-matplotlib python3-numpy  # agent tests: saved figures (fork_server.save_figures)
  python3-pandas  # E2B SDK tests: a DataFrame's HTML result
  redis-server    # the cluster's membership (serve --cluster); the cluster tests start their own
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# QEMU for the qemu runtime (KVM when usable, else TCG), from bookworm-backports (10.0): clones open a
# snapshot's RAM file read-only (memory-backend-file readonly=on,rom=off, QEMU 8.2 or later); with
# bookworm's 7.2 the runtime boots every VM cold. The suite is added with the mirror this machine already
# uses for bookworm, never a new host. Idempotent: nothing is done when QEMU 8.2 or later is installed.
ensure_backports() {
  grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
  local mirror
  mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n1)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
  if [ -z "$mirror" ]; then
    echo "install-deps: cannot tell which Debian mirror this machine uses for bookworm; add bookworm-backports by hand" >&2
    return 1
  fi
  echo "install-deps: adding bookworm-backports from $mirror"
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" > /etc/apt/sources.list.d/bookworm-backports.sources
}
qemu_version=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
if ! dpkg --compare-versions "${qemu_version:-0}" ge 1:8.2; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: qemu-system-x86 8.2 or later is missing (installed: ${qemu_version:-none}); run as root" >&2
    exit 1
  fi
  ensure_backports
  echo "install-deps: installing qemu-system-x86 from bookworm-backports (installed: ${qemu_version:-none})"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86
fi

if ! command -v dotnet >/dev/null; then
  echo "install-deps: the .NET 10 SDK (dotnet) is required and was not found on PATH" >&2
  exit 1
fi

# gVisor (runsc) for the gvisor runtime: Debian's bookworm-backports build (0.0~20240729, the one the
# runtime is measured and tested with; bookworm's own is from 2022). The suite is added with the mirror
# this machine already uses for bookworm, never a new host. Idempotent: nothing is done when a 2024 or
# later runsc is installed. ensure_backports is the same as the QEMU block's (defined here only when that
# block has not defined it already), so either block works alone and together they add the suite once.
if ! declare -F ensure_backports >/dev/null; then
  ensure_backports() {
    grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
    local mirror
    mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n1)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
    if [ -z "$mirror" ]; then
      echo "install-deps: cannot tell which Debian mirror this machine uses for bookworm; add bookworm-backports by hand" >&2
      return 1
    fi
    echo "install-deps: adding bookworm-backports from $mirror"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" > /etc/apt/sources.list.d/bookworm-backports.sources
  }
fi
runsc_version=$(dpkg-query -W -f='${Version}' runsc 2>/dev/null || true)
if ! dpkg --compare-versions "${runsc_version:-0}" ge 0.0~20240101; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: runsc (gVisor) 20240101 or later is missing (installed: ${runsc_version:-none}); run as root" >&2
    exit 1
  fi
  ensure_backports
  echo "install-deps: installing runsc from bookworm-backports (installed: ${runsc_version:-none})"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -t bookworm-backports runsc
fi
