#!/bin/sh
# make deb: build/clearance_VERSION_ARCH.deb from this source tree, with dpkg-deb.
#
# The package tree (build/deb/root) holds a virtualenv at /opt/clearance made with Debian's python3 (the
# package depends on it) and the project's wheel installed with the fast and embedded extras, the clearance
# command (/usr/bin/clearance), the systemd unit, /etc/clearance/config.yaml and the docs. The virtualenv is
# built in the tree, then its paths are rewritten to /opt/clearance and its byte code compiled for there.
#
# Usage: packaging/build-deb.sh VERSION ARCH PYTHON OUTPUT   (run from the source tree's top; prints nothing)
set -eu
umask 022

version=$1 arch=$2 python=$3 output=$4
top=$(pwd)
work=$top/build/deb
root=$work/root
venv=$root/opt/clearance

# setuptools' own in-tree build directories go too: a module deleted from the source would live on in them.
rm -rf "$work" "$output" "$top"/build/lib.* "$top"/build/bdist.* "$top"/build/temp.*
mkdir -p "$work/wheel" "$root/DEBIAN"

# The virtualenv, then the wheel built by it (so the C quick scan is compiled for the python that runs it).
"$python" -m venv "$venv"
"$venv/bin/pip" wheel --no-deps -w "$work/wheel" "$top"
wheel=$(ls "$work"/wheel/clearance-"$version"-*.whl)
"$venv/bin/pip" install --no-compile "clearance[fast,embedded] @ file://$wheel"
"$venv/bin/python" -c 'from icap_server.protocol import quick_scan; print("quick scan:", quick_scan("x").name)'

# Paths: every script and file naming the build tree names /opt/clearance instead.
grep -rlIF "$venv" "$venv" | while read -r file; do
    sed -i "s|$venv|/opt/clearance|g" "$file"
done
rm -rf "$venv"/lib/python3*/site-packages/clearance-*.dist-info/direct_url.json
# The C quick scan's debugging sections name the build tree too (Debian strips them from every package).
find "$venv/lib" -name '_speedups*.so' -exec strip --strip-debug --remove-section=.comment {} +
find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} +
"$venv/bin/python" -m compileall -q -j 0 -s "$root" -p / "$venv/lib"
if grep -rlF "$top" "$root" >/dev/null; then
    echo "build-deb: the package still names the build tree:" >&2
    grep -rlF "$top" "$root" >&2
    exit 1
fi

# The command, the unit, the configuration, the docs.
mkdir -p "$root/usr/bin"
ln -s /opt/clearance/bin/clearance "$root/usr/bin/clearance"
install -D -m 0644 packaging/clearance.service "$root/lib/systemd/system/clearance.service"
install -D -m 0644 packaging/config.yaml "$root/etc/clearance/config.yaml"
doc=$root/usr/share/doc/clearance
install -D -m 0644 README.md "$doc/README.md"
install -m 0644 CHANGELOG.md "$doc/CHANGELOG.md"
install -m 0644 config.yaml "$doc/config.yaml.example"
install -m 0644 LICENSE "$doc/copyright"

# The control files.
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" packaging/debian/control \
    >"$root/DEBIAN/control"
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"

dpkg-deb --build --root-owner-group "$root" "$output"
