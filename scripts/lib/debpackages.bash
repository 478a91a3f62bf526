# scripts/lib/debpackages.bash: install pinned Debian packages with apt-get when they are missing.
# Sourced, never run; shared by scripts/install-node-packages and scripts/install-cross-packages,
# which each list their packages and call:
#
#   debpackages_install NAME [--check] NAME=VERSION...
#
# A package that is installed at another version is used as it is, with a warning (an up- or
# downgrade of a machine's package is not these scripts' call); a missing one is installed with
# `apt-get install PACKAGE=VERSION`. `apt-get update` runs only when something must be installed,
# so a re-run with everything present costs one dpkg-query. When the archive has moved on and a
# pinned version is gone, apt-get says so and the pin in the calling script must be raised.
# --check only reports: exit 1 when a package is missing (installs nothing).
# shellcheck shell=bash

debpackages_install() {
    local name=$1 check_only=false
    shift
    if [[ "${1:-}" == "--check" ]]; then check_only=true; shift; fi
    local packages=("$@")
    local die_prefix="$name: ERROR:"
    local names=("${packages[@]%%=*}")
    command -v dpkg-query >/dev/null || {
        echo "$die_prefix dpkg-query not found: this needs a Debian-based machine with these packages: ${packages[*]}" >&2
        exit 1
    }
    # One line per package: NAME STATUS VERSION (dpkg-query exits 1 when one is unknown; fine).
    local -A installed=()
    local pkg status version
    while read -r pkg status version; do
        [[ "$status" == installed ]] && installed[$pkg]=$version
    done < <(dpkg-query -W -f '${Package} ${db:Status-Status} ${Version}\n' "${names[@]}" 2>/dev/null || true)

    local missing=() pin
    for pin in "${packages[@]}"; do
        pkg=${pin%%=*} version=${pin#*=}
        if [[ -z "${installed[$pkg]:-}" ]]; then
            missing+=("$pin")
        elif [[ "${installed[$pkg]}" != "$version" ]]; then
            echo "$name: WARNING: $pkg ${installed[$pkg]} is installed, not the pinned $version; using it" >&2
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0

    if $check_only; then echo "$die_prefix missing Debian packages: ${missing[*]}" >&2; exit 1; fi
    local how="run as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    command -v apt-get >/dev/null || {
        echo "$die_prefix apt-get not found; install these Debian packages: ${missing[*]}" >&2
        exit 1
    }
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "$die_prefix missing Debian packages: ${missing[*]}; installing them needs root (not root, and no password-less sudo). $how" >&2
            exit 1
        fi
    fi
    echo "==> $name: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q || { echo "$die_prefix apt-get update failed. $how" >&2; exit 1; }
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" || {
        echo "$die_prefix apt-get install failed (a pinned version gone from the archive? apt-cache policy NAME shows what is there; raise the pin in $name). $how" >&2
        exit 1
    }
}
