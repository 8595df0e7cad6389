#!/usr/bin/env bash
# Sourced by the launch scripts: their common command line, CONFIG WORKDIR [main.py flags...].
#
# parse_run_args USAGE "$@" sets `config`, `workdir` and the array `run_args` (the main.py flags
# after them), or prints "usage: USAGE" and exits 2 when CONFIG or WORKDIR is missing.
parse_run_args() {
  local usage=$1
  shift
  if [[ $# -lt 2 ]]; then
    echo "usage: $usage" >&2
    exit 2
  fi
  config=$1
  workdir=$2
  run_args=("${@:3}")
}
