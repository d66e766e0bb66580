#!/usr/bin/env bash
#
# Provision the minidocker lab: turn a CentOS 7 box into a machine on which
# minidocker and its test suite run.
#
# CentOS 7 is the classic target of a container engine: kernel 3.10, cgroup v1
# only, no pids controller, user namespaces off. It reached its end of life in
# June 2024, so nothing here can rely on the box's own settings: its yum
# mirrors are gone, its certificates are old, and it never had a Python that
# minidocker can run on. Each step below fixes one of those, says why, and is
# safe to repeat (`vagrant provision` runs it again). docs/lab.rst tells the
# whole story.
#
# Vagrant runs this file as root. Its settings are environment variables
# (the Vagrantfile passes every MINIDOCKER_LAB_* variable through):
#
#   MINIDOCKER_LAB_VAULT_URL      the archive of CentOS releases
#   MINIDOCKER_LAB_VAULT_RELEASE  the archived tree yum installs from
#   MINIDOCKER_LAB_UV_VERSION     the uv release that installs Python
#   MINIDOCKER_LAB_PYTHON         the Python version uv installs
#   MINIDOCKER_LAB_BUSYBOX_URL    a static busybox (CentOS 7 packages none)
#   MINIDOCKER_LAB_VOLUME         auto, always or never: the xfs volume for overlay
#   MINIDOCKER_LAB_VOLUME_SIZE    its size (a sparse file)
#   MINIDOCKER_LAB_SELINUX        permissive (the default) or keep
#   MINIDOCKER_LAB_FIREWALLD      stop (the default) or keep
#
# Sourcing the file defines the functions and runs nothing, so a test can
# call one step at a time:  source lab/provision.sh; write_vault_repositories F

set -euo pipefail

VAULT_URL="${MINIDOCKER_LAB_VAULT_URL:-http://vault.centos.org}"
VAULT_RELEASE="${MINIDOCKER_LAB_VAULT_RELEASE:-7.9.2009}"
UV_VERSION="${MINIDOCKER_LAB_UV_VERSION:-0.13.7}"
PYTHON_VERSION="${MINIDOCKER_LAB_PYTHON:-3.12}"
BUSYBOX_URL="${MINIDOCKER_LAB_BUSYBOX_URL:-https://busybox.net/downloads/binaries/1.35.0-x86_64-linux-musl/busybox}"
VOLUME_MODE="${MINIDOCKER_LAB_VOLUME:-auto}"
VOLUME_SIZE="${MINIDOCKER_LAB_VOLUME_SIZE:-8G}"
SELINUX_MODE="${MINIDOCKER_LAB_SELINUX:-permissive}"
FIREWALLD_MODE="${MINIDOCKER_LAB_FIREWALLD:-stop}"

ENGINE_ROOT=/var/lib/minidocker
VOLUME_IMAGE=/var/lib/minidocker.xfs
LOCAL_BIN=/usr/local/bin
PYTHON_HOME=/opt/minidocker-lab/python

# What the engine and the suite need on every host: the host tools that are
# the engine's hands (util-linux, iproute, iptables), mkfs.xfs for the overlay
# volume, a C compiler with a static libc (a test builds a chroot escape),
# and the small tools the provisioning and the tests use.
CORE_PACKAGES=(
    util-linux iproute iptables xfsprogs procps-ng psmisc kmod
    gcc glibc-static curl ca-certificates tar gzip cpio file which rsync sudo git
)
# The registry interop tests' tools: a registry, skopeo and htpasswd. skopeo
# and docker-distribution live in CentOS 7's extras repository, older than
# Debian 12's; the lab goes on without them.
INTEROP_PACKAGES=(skopeo docker-distribution httpd-tools)


main() {
    require_root
    require_centos_7
    point_yum_at_vault /etc/yum.repos.d/CentOS-Base.repo
    install_packages
    relax_selinux
    stop_firewalld
    load_kernel_modules /etc/modules-load.d/minidocker.conf
    enable_ip_forward /etc/sysctl.d/90-minidocker.conf
    prepare_engine_root
    install_busybox "$LOCAL_BIN/busybox"
    install_uv
    install_python
    let_sudo_find_local_tools /etc/sudoers.d/minidocker-lab
    report
}


# --- yum after the end of life ------------------------------------------------

point_yum_at_vault() {
    # The box's repo file names mirrorlist.centos.org, which stopped answering
    # at the end of life; every CentOS 7 tree now lives on vault.centos.org.
    # Plain http is what the vault serves to a 2018 box whose certificate
    # bundle predates today's roots; gpgcheck=1 with the key the box already
    # carries is what makes the packages trustworthy.
    local repo_file=$1
    if [[ -f $repo_file && ! -f $repo_file.orig ]]; then
        cp -p "$repo_file" "$repo_file.orig"
    fi
    say "yum: pointing base, updates and extras at $VAULT_URL/$VAULT_RELEASE"
    write_vault_repositories "$repo_file"
    yum -q clean all
}

write_vault_repositories() {
    local repo_file=$1 section tree
    : >"$repo_file"
    for section in base updates extras; do
        tree=$section
        [[ $section == base ]] && tree=os
        # $basearch stays literal: yum expands it, not this shell.
        cat >>"$repo_file" <<EOF
[$section]
name=CentOS-7 - $section (vault, $VAULT_RELEASE)
baseurl=$VAULT_URL/$VAULT_RELEASE/$tree/\$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7
enabled=1

EOF
    done
}

install_packages() {
    local missing package
    mapfile -t missing < <(missing_packages "${CORE_PACKAGES[@]}")
    if ((${#missing[@]})); then
        say "yum: installing ${missing[*]}"
        yum -y install "${missing[@]}"
    fi
    # yum skips a name it cannot find and may still succeed, so ask rpm.
    mapfile -t missing < <(missing_packages "${CORE_PACKAGES[@]}")
    ((${#missing[@]} == 0)) || die "core packages did not install: ${missing[*]}"
    # The box's TLS stack and certificate bundle are from 2018: too old for the
    # https servers uv and busybox come from. The kernel is not touched.
    say "yum: updating the TLS stack (ca-certificates, curl, nss, openssl)"
    yum -y update ca-certificates curl nss nss-util nspr openssl
    # Not a `for` over a possibly empty array: bash 4.2 (CentOS 7's) calls
    # "${empty[@]}" an unbound variable under set -u.
    for package in "${INTEROP_PACKAGES[@]}"; do
        rpm -q "$package" >/dev/null && continue
        # A failure here is reported below and costs only the tests that
        # need the package, so it does not stop the lab.
        yum -y install "$package" || true
        rpm -q "$package" >/dev/null ||
            warn "$package did not install: the tests that need it will skip"
    done
    link_distribution_registry
}

missing_packages() {
    # Print, one a line, each named package that rpm does not know as installed.
    local package
    for package in "$@"; do
        rpm -q "$package" >/dev/null || printf '%s\n' "$package"
    done
}

link_distribution_registry() {
    # Debian calls distribution's registry `docker-registry`; CentOS's
    # docker-distribution package calls the same program `registry`.
    if [[ -x /usr/bin/registry && ! -e $LOCAL_BIN/docker-registry ]]; then
        ln -s /usr/bin/registry "$LOCAL_BIN/docker-registry"
    fi
}


# --- the host's own policies --------------------------------------------------

relax_selinux() {
    # The box boots with SELinux enforcing and no container policy (that is
    # container-selinux, made for Docker and podman). minidocker teaches
    # namespaces and cgroups, not SELinux labels: run permissive, so a denial
    # is logged to the audit log instead of failing a mount or an exec.
    [[ $SELINUX_MODE == keep ]] && return 0
    if command -v getenforce >/dev/null && [[ $(getenforce) == Enforcing ]]; then
        say "selinux: permissive (set MINIDOCKER_LAB_SELINUX=keep to leave it enforcing)"
        setenforce 0
    fi
    if [[ -f /etc/selinux/config ]]; then
        sed -i 's/^SELINUX=enforcing$/SELINUX=permissive/' /etc/selinux/config
    fi
}

stop_firewalld() {
    # firewalld owns the iptables tables while it runs and rewrites them on
    # every reload, removing the engine's NAT chains. systemd 219 (CentOS 7)
    # has no `disable --now`, hence two commands.
    [[ $FIREWALLD_MODE == keep ]] && return 0
    if systemctl is-active --quiet firewalld; then
        say "firewalld: stopped and disabled (MINIDOCKER_LAB_FIREWALLD=keep leaves it)"
        systemctl stop firewalld
        systemctl disable firewalld
    fi
}


# --- the kernel ---------------------------------------------------------------

load_kernel_modules() {
    # overlay is a module on CentOS 7 (a "technology preview" there) and is not
    # loaded at boot; modules-load.d loads it on every later boot.
    local modules_file=$1
    say "kernel: loading overlay"
    modprobe overlay
    printf 'overlay\n' >"$modules_file"
}

enable_ip_forward() {
    # A container's packets to the outside are forwarded from the bridge to
    # the host's uplink; the kernel drops them while ip_forward is 0.
    local sysctl_file=$1
    say "kernel: net.ipv4.ip_forward = 1"
    printf 'net.ipv4.ip_forward = 1\n' >"$sysctl_file"
    sysctl -q -p "$sysctl_file"
}


# --- a filesystem overlay can use ---------------------------------------------

prepare_engine_root() {
    case $VOLUME_MODE in
        always)
            make_overlay_volume "$VOLUME_IMAGE" "$ENGINE_ROOT" "$VOLUME_SIZE" /etc/fstab ;;
        never)
            say "storage: MINIDOCKER_LAB_VOLUME=never: $ENGINE_ROOT stays on the root filesystem"
            mkdir -p "$ENGINE_ROOT" ;;
        auto)
            if needs_overlay_volume "$(dirname "$ENGINE_ROOT")"; then
                make_overlay_volume "$VOLUME_IMAGE" "$ENGINE_ROOT" "$VOLUME_SIZE" /etc/fstab
            else
                say "storage: $ENGINE_ROOT is on a filesystem with d_type; overlay works there"
                mkdir -p "$ENGINE_ROOT"
            fi ;;
        *)
            die "MINIDOCKER_LAB_VOLUME=$VOLUME_MODE: use auto, always or never" ;;
    esac
}

needs_overlay_volume() {
    # overlayfs needs d_type (the file type in each directory entry) from the
    # filesystem under its upper and work dirs. ext4 and tmpfs always have it;
    # xfs has it only when formatted with ftype=1, which older installers
    # did not do. On xfs without it overlay refuses to mount (newer kernels)
    # or misbehaves on whiteouts (3.10).
    local directory=$1 type mount_point info
    # Called as a condition, so set -e is off in here: check every step.
    type=$(stat --file-system --format=%T "$directory") || die "cannot stat $directory"
    [[ $type == xfs ]] || return 1
    mount_point=$(df --output=target "$directory") || die "df $directory failed"
    mount_point=$(tail -n 1 <<<"$mount_point")
    # CentOS 7's xfs_info takes a mounted filesystem, not a path inside one.
    info=$(xfs_info "$mount_point") || die "xfs_info $mount_point failed"
    ! xfs_info_has_ftype <<<"$info"
}

xfs_info_has_ftype() {
    # Reads xfs_info's report on standard input; its "naming" line carries
    # ftype=0 or ftype=1 (reports from before ftype existed have neither).
    grep -q 'ftype=1'
}

make_overlay_volume() {
    # A loop file formatted xfs with ftype=1, mounted at the engine root and
    # recorded in fstab so it comes back after a reboot.
    local image=$1 mount_point=$2 size=$3 fstab=$4
    if mountpoint -q "$mount_point"; then
        say "storage: $mount_point is already mounted"
        return 0
    fi
    mkdir -p "$mount_point"
    if [[ -n $(ls -A "$mount_point") ]]; then
        die "$mount_point is not empty: mounting the volume would hide its contents"
    fi
    if [[ ! -e $image ]]; then
        say "storage: formatting $image ($size, xfs ftype=1) for overlay"
        truncate --size="$size" "$image"
        mkfs.xfs -q -n ftype=1 "$image"
    fi
    if ! grep -qF "$image $mount_point " "$fstab"; then
        printf '%s %s xfs loop 0 0\n' "$image" "$mount_point" >>"$fstab"
    fi
    mount -t xfs -o loop "$image" "$mount_point"
    say "storage: $image mounted at $mount_point"
}


# --- user space the box lacks -------------------------------------------------

install_busybox() {
    # The tests build their images from a static busybox. CentOS 7 packages
    # none (Debian's busybox-static is what the suite uses elsewhere), so take
    # the static build the busybox project publishes.
    local target=$1 download applets
    if [[ -x $target ]]; then
        return 0
    fi
    say "busybox: $BUSYBOX_URL"
    download=$(mktemp)
    curl --fail --silent --show-error --location --output "$download" "$BUSYBOX_URL"
    chmod 0755 "$download"
    applets=$("$download" --list) || die "$BUSYBOX_URL does not run here"
    grep -qx sh <<<"$applets" || die "$BUSYBOX_URL is not a busybox with a shell"
    say "busybox: sha256 $(sha256sum "$download" | cut -d' ' -f1)"
    # install(1) makes a new file, so it takes /usr/local/bin's SELinux label.
    install -m 0755 "$download" "$target"
    rm -f "$download"
}

install_uv() {
    # uv installs Python from python-build-standalone, whose builds need only
    # glibc 2.17 -- exactly CentOS 7's. The installer is uv's own, at the
    # pinned version; UV_UNMANAGED_INSTALL puts the binary in /usr/local/bin
    # and leaves shell profiles alone.
    if [[ -x $LOCAL_BIN/uv && $("$LOCAL_BIN/uv" --version) == "uv $UV_VERSION"* ]]; then
        return 0
    fi
    local installer
    installer=$(mktemp)
    say "uv: installing $UV_VERSION"
    curl --fail --silent --show-error --location --proto '=https' \
        --output "$installer" "https://astral.sh/uv/$UV_VERSION/install.sh"
    UV_UNMANAGED_INSTALL=$LOCAL_BIN sh "$installer"
    rm -f "$installer"
}

install_python() {
    # UV_PYTHON_BIN_DIR puts a `python3.12` next to uv, where the test script
    # looks for it; the interpreter itself lives under /opt.
    say "python: installing $PYTHON_VERSION with uv"
    UV_PYTHON_INSTALL_DIR=$PYTHON_HOME UV_PYTHON_BIN_DIR=$LOCAL_BIN \
        "$LOCAL_BIN/uv" python install "$PYTHON_VERSION"
    "$LOCAL_BIN/python$PYTHON_VERSION" -c 'import ssl, sys, venv; print("python:", sys.version.split()[0])'
}

let_sudo_find_local_tools() {
    # `vagrant ssh -c 'sudo bash scripts/test.sh'` runs with sudo's
    # secure_path, which on CentOS 7 leaves out /usr/local/bin -- where
    # python3.12, uv and busybox now are.
    local sudoers_file=$1 draft
    draft=$(mktemp)
    printf 'Defaults secure_path = /usr/local/sbin:%s:/sbin:/bin:/usr/sbin:/usr/bin\n' \
        "$LOCAL_BIN" >"$draft"
    chmod 0440 "$draft"
    visudo -c -q -f "$draft" || die "visudo rejected the secure_path line"
    install -m 0440 "$draft" "$sudoers_file"
    rm -f "$draft"
}


# --- what the student gets ----------------------------------------------------

report() {
    say "kernel $(uname -r); cgroup controllers: $(enabled_cgroup_controllers)"
    grep -qw pids /proc/cgroups ||
        say "no pids controller on this kernel: --pids-limit cannot be enforced"
    grep -qw cgroup2 /proc/filesystems ||
        say "no cgroup2 filesystem on this kernel: cgroup v1 only"
    if [[ -r /proc/sys/user/max_user_namespaces ]]; then
        say "user namespaces allowed: $(cat /proc/sys/user/max_user_namespaces)"
    fi
    say "ready: vagrant ssh -c 'cd /vagrant && sudo bash scripts/test.sh'"
}

enabled_cgroup_controllers() {
    # /proc/cgroups: subsys_name hierarchy num_cgroups enabled
    awk 'NR > 1 && $4 == 1 { printf "%s ", $1 }' /proc/cgroups
}

require_root() {
    [[ $(id -u) == 0 ]] || die "run as root (Vagrant's shell provisioner does)"
}

require_centos_7() {
    # The vault holds CentOS trees only; any other box needs its own recipe.
    grep -qs 'release 7' /etc/centos-release ||
        die "this is not CentOS 7 ($(head -n 1 /etc/os-release 2>/dev/null || echo unknown)); the lab provisions CentOS 7 only"
}

say() {
    printf '==> minidocker lab: %s\n' "$*"
}

warn() {
    printf '==> minidocker lab: WARNING: %s\n' "$*" >&2
}

die() {
    printf '==> minidocker lab: ERROR: %s\n' "$*" >&2
    exit 1
}


# `return` is allowed only in a function or a sourced file: at the top level
# it tells a run (do the work) from a source (only define the steps).
if ! (return 0 2>/dev/null); then
    main "$@"
fi
