#!/usr/bin/env bash
# Install the Debian tools medvit's tests use as external references, when missing:
#   dcmtk (dcm2pnm: reference DICOM renderer), dicom3tools (dciodvfy: DICOM validator),
#   chromium + chromium-driver (end-to-end viewer test),
#   orthanc + orthanc-dicomweb (a real PACS for the DICOMweb/DIMSE tests; each test starts its own),
#   default-jre-headless (java for pycocoevalcap's METEOR 1.5 jar; without it METEOR is skipped with a logged note).
# Without root or apt the tests that need them are skipped with a message saying so.
set -u
need=()
command -v dcm2pnm >/dev/null 2>&1 || need+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_sysdeps: cannot install ${need[*]} (need root and apt-get); tests needing them will be skipped" >&2
  exit 0
fi
echo "install_sysdeps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "install_sysdeps: apt-get install ${need[*]} failed; dependent tests will be skipped" >&2
exit 0
