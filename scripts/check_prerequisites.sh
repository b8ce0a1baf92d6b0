#!/usr/bin/env bash
# What `make setup` needs before it installs anything: Python 3.11, a JDK 17+ and a C++ compiler.
# Prints what is missing and how to get it, and exits non-zero if anything is.
set -uo pipefail
python=${1:-python3}
missing=0

version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
if [[ $version != 3.11 ]]; then
  echo "setup needs Python 3.11; '$python' is ${version}. Install it (Debian/Ubuntu: apt-get install python3.11" \
       "python3.11-venv; or pyenv install 3.11) and run: make setup PYTHON=/path/to/python3.11" >&2
  missing=1
fi

java_bin=${JAVA_HOME:+$JAVA_HOME/bin/}java
java_major=$("$java_bin" -version 2>&1 | sed -nE '1s/.*version "([0-9]+)(\.[0-9]+)*.*".*/\1/p')
if [[ -z $java_major || $java_major -lt 17 ]]; then
  echo "Spark 4 needs a JDK 17 or newer; found ${java_major:-no java} (${java_bin}). Install one" \
       "(Debian/Ubuntu: apt-get install openjdk-17-jdk-headless) or point JAVA_HOME at it." >&2
  missing=1
fi

if ! command -v g++ >/dev/null; then
  echo "building Horovod needs g++ and cmake's make; install them (Debian/Ubuntu: apt-get install g++ make)." >&2
  missing=1
fi
exit $missing
