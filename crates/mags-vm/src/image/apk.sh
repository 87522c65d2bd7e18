#!/bin/sh
# apk for scripts written for an Alpine guest. This guest is Debian, so
# the common apk commands run apt, with Alpine package names mapped to
# Debian ones (py3-requests -> python3-requests, build-base ->
# build-essential, ...). A package with no Debian counterpart is an error
# that names it, and then nothing is installed or removed.
# APK_SHIM_DRY_RUN=1 prints the apt command instead of running it.
set -u
export DEBIAN_FRONTEND=noninteractive

die() {
	echo "apk: $*" >&2
	exit 1
}

usage() {
	echo "usage: apk add|del|update|upgrade|search|info [options] [packages]" >&2
	echo "(this guest is Debian: apk is a shim over apt-get)" >&2
	exit 1
}

run() {
	if [ "${APK_SHIM_DRY_RUN:-}" = 1 ]; then
		echo "$*"
	else
		"$@"
	fi
}

# The Debian candidates for one Alpine name, most likely first.
candidates() {
	case "$1" in
	*=*) candidates "${1%%=*}" ;;
	*'>'* | *'<'* | *'~'*) candidates "$(echo "$1" | sed 's/[<>~].*//')" ;;
	py3-pip) echo python3-pip ;;
	py3-*) echo "python3-${1#py3-}" ;;
	build-base | alpine-sdk) echo build-essential ;;
	nodejs-current | nodejs-lts) echo nodejs ;;
	openssh) echo "openssh-client openssh-server" ;;
	openssl-dev | libressl-dev) echo libssl-dev ;;
	musl-dev | libc-dev) echo libc6-dev ;;
	linux-headers) echo linux-libc-dev ;;
	bind-tools) echo dnsutils ;;
	sqlite) echo sqlite3 ;;
	sqlite-dev) echo libsqlite3-dev ;;
	zlib-dev) echo zlib1g-dev ;;
	jpeg-dev | libjpeg-turbo-dev) echo libjpeg-dev ;;
	chromium-chromedriver) echo chromium-driver ;;
	font-noto) echo fonts-noto ;;
	ttf-freefont) echo fonts-freefont-ttf ;;
	mysql-client) echo mariadb-client ;;
	g++) echo g++ ;;
	*-dev) echo "$1 lib$1" ;;
	*) echo "$1" ;;
	esac
}

known() {
	apt-cache show --no-all-versions "$1" >/dev/null 2>&1
}

# Prints the Debian names for the Alpine names given, or fails naming the
# first one with no Debian package (before anything changes).
map_all() {
	out=""
	for name in "$@"; do
		case "$name" in
		alpine-base | alpine-baselayout | busybox-suid | apk-tools) continue ;;
		esac
		found=""
		for c in $(candidates "$name"); do
			if known "$c"; then
				found="$c"
				break
			fi
		done
		[ -n "$found" ] || die "no Debian package for the Alpine package '$name' (this guest is Debian bookworm; apk is a shim over apt-get, try 'apt-cache search $name'); nothing was installed"
		out="$out $found"
	done
	echo "$out"
}

[ $# -ge 1 ] || usage
cmd="$1"
shift

# Options: those that take a value drop it, the rest are ignored (apt has
# no cache to skip; -U updates the lists first).
update_first=""
names=""
while [ $# -gt 0 ]; do
	case "$1" in
	-t | --virtual | -X | --repository | -p | --root | --arch | --cache-dir | --keys-dir)
		shift
		[ $# -gt 0 ] && shift
		continue
		;;
	-U | --update-cache) update_first=1 ;;
	-*) ;;
	*) names="$names $1" ;;
	esac
	shift
done

case "$cmd" in
add)
	[ -n "$names" ] || die "add: name at least one package"
	# shellcheck disable=SC2086
	debs=$(map_all $names) || exit 1
	[ -n "$debs" ] || exit 0
	[ -n "$update_first" ] && run apt-get update -qq
	# shellcheck disable=SC2086
	run apt-get install -y -q --no-install-recommends $debs && exit 0
	# Stale package lists are the usual reason: refresh them once.
	run apt-get update -qq || exit 1
	# shellcheck disable=SC2086
	run apt-get install -y -q --no-install-recommends $debs
	;;
del)
	[ -n "$names" ] || die "del: name at least one package"
	# shellcheck disable=SC2086
	debs=$(map_all $names) || exit 1
	[ -n "$debs" ] || exit 0
	# shellcheck disable=SC2086
	run apt-get remove -y -q $debs
	;;
update)
	run apt-get update
	;;
upgrade)
	run apt-get update -qq && run apt-get upgrade -y -q
	;;
search)
	[ -n "$names" ] || die "search: give a word to look for"
	for n in $names; do
		apt-cache search --names-only "$n"
	done
	;;
info)
	if [ -z "$names" ]; then
		dpkg-query -W -f '${Package}\n'
		exit 0
	fi
	# shellcheck disable=SC2086
	debs=$(map_all $names) || exit 1
	for d in $debs; do
		apt-cache show --no-all-versions "$d"
	done
	;;
--version | -V)
	echo "apk (Mags shim over apt-get on Debian)"
	;;
*)
	usage
	;;
esac
