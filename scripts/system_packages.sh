#!/usr/bin/env bash
# System packages some tests start for real (not Python packages: pip installs those into .venv).
# `make test` calls this. As root with apt (CI, a container) it installs what is missing; otherwise it prints the one
# command to run and goes on, and the tests that need a missing package fail naming it.
set -euo pipefail
# Daemons (slurmctld, munged) live in sbin folders, which a user's PATH often lacks.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# package -> the command that shows it is installed
declare -A NEEDED=(
  [slurm-wlm]=slurmctld  # tests/test_slurm_cluster.py: a one-node Slurm cluster (slurmctld, slurmd, sbatch)
  [munge]=munged        # Slurm's authentication daemon
  [chromium]=chromium   # tests/test_browser.py: JupyterLab in headless Chromium, as a person runs the notebooks
)

missing=()
for pkg in "${!NEEDED[@]}"; do
  command -v "${NEEDED[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "system packages missing: ${missing[*]}; the tests that start them will fail until you run:"
  echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}"
fi
