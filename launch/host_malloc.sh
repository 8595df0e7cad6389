# Sourced by launch/local.sh: preload_tcmalloc exports LD_PRELOAD=<tcmalloc> when the system has
# tcmalloc (apt install libtcmalloc-minimal4), GLITR_TCMALLOC is not 0 and LD_PRELOAD is unset.
#
# On the CPU, XLA allocates every step's temporaries anew (2.2 GiB for the real-size teacher step)
# and glibc hands them back to the kernel on free, so each step faults them in again; tcmalloc
# keeps them (README, Performance). main.py logs the allocator it runs on.
preload_tcmalloc() {
  if [[ "${GLITR_TCMALLOC:-1}" == 0 || -n "${LD_PRELOAD:-}" ]]; then
    return 0
  fi
  local listing lib
  listing=$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)
  lib=$(awk '/libtcmalloc(_minimal)?\.so\.4 / && !found {print $NF; found = 1}' <<<"$listing")
  if [[ -n "$lib" && -e "$lib" ]]; then
    export LD_PRELOAD=$lib
  fi
}
