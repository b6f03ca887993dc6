# Sourced by scripts/check and scripts/quickstart: installs the Debian packages
# that are missing (apt-get, as root) from the list given as arguments.
deps_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "Missing Debian packages: ${missing[*]}" >&2
		echo "Install them (sudo apt-get install ${missing[*]}) or run this as root." >&2
		return 1
	fi
	echo "Installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Packages the build needs (libhiredis-dev: the Redis store, server.store;
# tzdata: the zones of apis[].dayResetTimezone).
DEPS_BUILD=(gcc make autoconf automake libtool pkg-config libfcgi-dev
	libcurl4-openssl-dev libjansson-dev libgdbm-dev libhiredis-dev lighttpd ca-certificates
	tzdata)

# python3 may come from elsewhere (pyenv); only ask apt for it when absent.
deps_python() {
	command -v python3 >/dev/null 2>&1 || deps_install python3
}

# Builds in the source tree, reconfiguring only when needed.
deps_build() {
	if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
		autoreconf -fi
	fi
	if [ ! -f Makefile ] || [ configure -nt Makefile ] || [ -n "${DEPS_RECONFIGURE:-}" ]; then
		./configure "$@"
	fi
	make -j"$(nproc)"
}

# Packages the checks beyond make check need: clang with libFuzzer (make
# fuzz; libclang-rt-dev is Debian's libclang-rt-N-dev of the default clang)
# and valgrind (make valgrind-check). gcc's own ASan and UBSan come with gcc.
DEPS_CHECK_TOOLS=(clang libclang-rt-dev valgrind)
