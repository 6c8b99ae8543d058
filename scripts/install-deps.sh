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
  qemu-system-x86 # qemu runtime (KVM when usable, else TCG)
  kmod            # modinfo: guest kernel module order
  gcc binutils libc6-dev  # NativeAOT link of the guest agent (clang is used instead when present)
  python3
  python3-matplotlib python3-numpy  # agent tests: saved figures (fork_server.save_figures)
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

if ! command -v dotnet >/dev/null; then
  echo "install-deps: the .NET 10 SDK (dotnet) is required and was not found on PATH" >&2
  exit 1
fi
