#!/bin/sh
# What tests/interop needs besides the Python test extra (which brings zeep and
# suds-community: pip install -e '.[test]'). Idempotent; run as root on Debian 12.
#   gsoap         wsdl2h, soapcpp2
#   libgsoap-dev  stdsoap2.h, libgsoap++
#   g++           compiles the gSOAP client
#   jaxws         wsimport and the runtime the Java client runs on (JAX-WS RI 2.3.0, /usr/share/jaxws/lib/jaxws-rt.jar)
#   default-jdk-headless  javac, which wsimport compiles the stubs with (only if no JDK is there)
#   nodejs, npm   node-soap (npm install soap; the tests install it under ~/.cache/soapreceptor-interop)
set -eu
missing=""
command -v wsdl2h >/dev/null 2>&1 && command -v soapcpp2 >/dev/null 2>&1 || missing="$missing gsoap"
[ -e /usr/include/stdsoap2.h ] || missing="$missing libgsoap-dev"
command -v g++ >/dev/null 2>&1 || missing="$missing g++"
command -v wsimport >/dev/null 2>&1 || missing="$missing jaxws"
command -v javac >/dev/null 2>&1 || missing="$missing default-jdk-headless"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing
fi
