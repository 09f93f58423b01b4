#!/usr/bin/env bash
# Builds the python-sink plugin in DIR (default: out/python-sink at the top of the repository):
#   DIR/venv         a virtual environment with requirements.txt installed (kept while requirements.txt
#                    is unchanged, so a second build installs nothing)
#   DIR/stubs        sluice_pb2.py and sluice_pb2_grpc.py, generated from sdk/proto/sluice.proto
#   DIR/plugins/python-sink
#                    the executable sluice starts: put DIR/plugins in a plugins directory (--plugins-dir)
# PYTHON names the interpreter that makes the virtual environment (default python3, 3.9 or later).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${1:-$root/out/python-sink}
python=${PYTHON:-python3}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# One build at a time in DIR (tests of several modules may run at once).
exec 9>"$dir/.lock"
flock 9

stamp=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$dir/venv/.requirements" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$dir/venv"
  if ! "$python" -m venv "$dir/venv"; then
    echo "build.sh: cannot create a virtual environment with $python -m venv (on Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  if ! "$dir/venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$here/requirements.txt"; then
    echo "build.sh: installing $here/requirements.txt from PyPI failed" >&2
    exit 1
  fi
  echo "$stamp" > "$dir/venv/.requirements"
fi

rm -rf "$dir/stubs"
mkdir -p "$dir/stubs" "$dir/plugins"
chmod 755 "$dir/plugins" # sluice runs only executables in directories no one else can write to
"$dir/venv/bin/python" -m grpc_tools.protoc -I "$root/sdk/proto" \
  --python_out="$dir/stubs" --grpc_python_out="$dir/stubs" "$root/sdk/proto/sluice.proto"

# The launcher: sluice starts plugins with a minimal environment, so it names the interpreter and the
# stubs itself. It carries the digest of the code it runs: sluice caches a plugin's spec while the
# executable (this launcher) is unchanged, so a change to the Python code must change the launcher.
# Written to a temporary file and renamed, so a running sluice never sees half of it.
code=$(cat "$here/sink.py" "$here/wire.py" "$here/requirements.txt" "$root/sdk/proto/sluice.proto" | sha256sum | cut -d' ' -f1)
cat > "$dir/plugins/.python-sink.tmp" <<LAUNCHER
#!/bin/sh
# python-sink, built by $here/build.sh; code sha256:$code
PYTHONPATH='$dir/stubs:$here' PYTHONPYCACHEPREFIX='$dir/pycache' exec '$dir/venv/bin/python' '$here/sink.py'
LAUNCHER
chmod 755 "$dir/plugins/.python-sink.tmp"
mv "$dir/plugins/.python-sink.tmp" "$dir/plugins/python-sink"
echo "built $dir/plugins/python-sink"
