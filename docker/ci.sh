#!/usr/bin/env bash
# CI's Docker step (.ci/run calls it): build the CPU image from this repository's Dockerfile and run pwmpr in it.
#
#   1. Docker: installs docker.io when there is no client (root only); starts a daemon when none answers and stops
#      that one alone, by its pid, on exit.
#   2. Base: BASE (default debian:bookworm-slim) when it is present or can be pulled; otherwise an offline Debian
#      bookworm minbase made with mmdebstrap and imported as pwmpr-ci-base:bookworm-minbase, kept across runs.
#   3. Wheelhouse (docker/install.sh --wheels docker/wheels cpu, with this machine's pip configuration) and the CPU
#      image from ./Dockerfile (FLAVOUR=cpu, WHEELHOUSE=docker/wheels): pip in the build uses the wheelhouse alone.
#   4. Fails when the image runs as root. With no network in the container: pwmpr grow on mnist5k (short epochs),
#      pwmpr export of that run, pwmpr inspect of the exported files, and one bad input that must give exit 2 and a
#      single line `error: ...`. Then, on the host side of the volume: the files are there and owned by the image's
#      user (uid 10001; when this script does not run as root, the container runs as --user "$(id -u):$(id -g)").
#   5. Prints the time of each step, the image size and the disk Docker used; removes the images, the wheelhouse
#      and the runs it made (the cached base stays).
#
# Any failure exits non-zero. When Docker can't start, the step fails; PWMPR_SKIP_DOCKER=1 skips it on purpose and
# says loudly that the image was not tested.
# Environment: BASE (see 2), TORCH_INDEX (for the wheelhouse; empty by default, i.e. pip's own configuration,
# which must then give the CPU torch: on plain PyPI set it to https://download.pytorch.org/whl/cpu),
# PWMPR_DOCKERD_ARGS (flags of a daemon this script starts; default: vfs storage, no iptables, no bridge),
# PWMPR_DOCKER_PRUNE=1 (also drop the build cache of a daemon this script did not start).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "docker/ci.sh: $*"; }
fail() {
  echo "docker/ci.sh: FAILED: $*" >&2
  exit 1
}

if [ "${PWMPR_SKIP_DOCKER:-}" = 1 ]; then
  echo "docker/ci.sh: ##################################################################"
  echo "docker/ci.sh: PWMPR_SKIP_DOCKER=1: the Docker image was NOT built and NOT tested."
  echo "docker/ci.sh: ##################################################################"
  exit 0
fi

tag=pwmpr-ci:cpu-$$
offline_base=pwmpr-ci-base:bookworm-minbase
base=${BASE:-debian:bookworm-slim}
work=$(mktemp -d "${TMPDIR:-/tmp}/pwmpr-docker-ci.XXXXXX")
dockerd_pid=""
made_images=()
wheels_made=""
timings=()

cleanup() {
  local rc=$?
  set +e
  if [ ${#made_images[@]} -gt 0 ] && docker info >/dev/null 2>&1; then
    docker rm -f "pwmpr-ci-$$" >/dev/null 2>&1
    docker rmi -f "${made_images[@]}" >/dev/null 2>&1
    # the layers a failed build left behind: untagged images that were not there before this script
    local id
    [ -f "$work/dangling-before" ] && for id in $(docker images -aq --no-trunc -f dangling=true); do
      grep -qx "$id" "$work/dangling-before" || docker rmi -f "$id" >/dev/null 2>&1
    done
    # BuildKit's cache (the build stage among it): dropped when the daemon is this script's own, or on request
    if [ -n "$dockerd_pid" ] || [ "${PWMPR_DOCKER_PRUNE:-}" = 1 ]; then
      docker builder prune -af >/dev/null 2>&1
    else
      say "kept the daemon's build cache (not this script's daemon): 'docker builder prune' frees it"
    fi
  fi
  [ -n "$wheels_made" ] && rm -rf docker/wheels
  rm -rf "$work"
  if [ -n "$dockerd_pid" ]; then
    say "stopping the Docker daemon this script started (pid $dockerd_pid)"
    kill "$dockerd_pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  if [ "$rc" -ne 0 ]; then
    echo "docker/ci.sh: FAILED (exit $rc): the Docker image did not pass" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT

# step NAME COMMAND...: run one timed step; its output goes to $work/NAME.log and is shown when it fails.
step() {
  local name=$1
  shift
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  "$@" >"$work/$name.log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  timings+=("$name $secs")
  if [ "$rc" -ne 0 ]; then
    echo "docker/ci.sh: step '$name' failed (exit $rc) after $secs s; its last lines:" >&2
    tail -n 40 "$work/$name.log" | sed 's/^/    /' >&2
    fail "$name"
  fi
  say "$name: ok ($secs s)"
}

# --- 1. Docker -------------------------------------------------------------------------------------------------
is_root() { [ "$(id -u)" = 0 ]; }
# A client alone is not enough: without a daemon that answers, the daemon (dockerd) must be there to start.
if ! command -v docker >/dev/null 2>&1 || { ! docker info >/dev/null 2>&1 && ! command -v dockerd >/dev/null 2>&1; }; then
  is_root || fail "no docker client or daemon, and only root can install docker.io (or set PWMPR_SKIP_DOCKER=1)"
  install_docker() { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io; }
  step install-docker install_docker
fi
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null 2>&1 || fail "no Docker daemon answers and there is no dockerd to start"
  is_root || fail "no Docker daemon answers, and only root can start one here (or set PWMPR_SKIP_DOCKER=1)"
  read -r -a dockerd_args <<<"${PWMPR_DOCKERD_ARGS:---storage-driver=vfs --iptables=false --bridge=none}"
  say "no Docker daemon answers; starting: dockerd ${dockerd_args[*]}"
  dockerd "${dockerd_args[@]}" >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  start_daemon() {
    for _ in $(seq 120); do
      docker info >/dev/null 2>&1 && return 0
      kill -0 "$dockerd_pid" 2>/dev/null || { cat "$work/dockerd.log"; return 1; }
      sleep 0.5
    done
    tail -n 20 "$work/dockerd.log"
    return 1
  }
  step start-daemon start_daemon
fi
say "Docker $(docker version -f '{{.Server.Version}}'), storage $(docker info -f '{{.Driver}}'), root $(docker info -f '{{.DockerRootDir}}')"

# --- 2. Base ---------------------------------------------------------------------------------------------------
make_offline_base() {
  if ! command -v mmdebstrap >/dev/null 2>&1; then
    is_root || { echo "mmdebstrap is missing and only root can install it"; return 1; }
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap
  fi
  mmdebstrap --variant=minbase bookworm "$work/rootfs.tar" \
    && docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' "$work/rootfs.tar" "$offline_base" \
    && rm -f "$work/rootfs.tar"
}
if docker image inspect "$base" >/dev/null 2>&1; then
  say "base: $base (present)"
elif timeout 120 docker pull -q "$base" >"$work/pull.log" 2>&1; then
  say "base: $base (pulled)"
else
  say "base: $base can't be pulled ($(tail -n 1 "$work/pull.log")); using the offline base $offline_base"
  base=$offline_base
  if docker image inspect "$base" >/dev/null 2>&1; then
    say "base: $base (cached)"
  else
    step make-base make_offline_base
  fi
fi

# --- 3. Wheelhouse and image -----------------------------------------------------------------------------------
rm -rf docker/wheels
wheels_made=1
make_wheels() { TORCH_INDEX=${TORCH_INDEX-} bash docker/install.sh --wheels docker/wheels cpu; }
step wheelhouse make_wheels
say "wheelhouse: $(find docker/wheels -name '*.whl' | wc -l) wheels, $(du -sh docker/wheels | cut -f1)"

# BuildKit when a client offers it (buildx, or a client older than 23 with BuildKit built in): it makes no container
# for ENV, USER and the like, which the vfs driver would copy in full. Otherwise the legacy builder.
builder=(env DOCKER_BUILDKIT=0 docker build --force-rm)
builder_name="legacy builder"
for client in docker /usr/bin/docker; do
  command -v "$client" >/dev/null 2>&1 || continue
  client_major=$("$client" version -f '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
  if "$client" buildx version >/dev/null 2>&1 || { [ -n "$client_major" ] && [ "$client_major" -lt 23 ]; }; then
    builder=(env DOCKER_BUILDKIT=1 "$client" build --progress plain)
    builder_name="BuildKit ($client, client $("$client" version -f '{{.Client.Version}}'))"
    break
  fi
done
say "builder: $builder_name"
docker images -aq --no-trunc -f dangling=true >"$work/dangling-before"
made_images+=("$tag")
step build "${builder[@]}" --network host --build-arg "BASE=$base" --build-arg FLAVOUR=cpu \
  --build-arg WHEELHOUSE=docker/wheels -t "$tag" .
rm -rf docker/wheels
wheels_made=""
size=$(docker image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }')
root_dir=$(docker info -f '{{.DockerRootDir}}')
disk=$(du -sh "$root_dir" 2>/dev/null | cut -f1 || echo "?")
say "image: $tag, $size; $root_dir holds $disk"

# --- 4. Run it -------------------------------------------------------------------------------------------------
user=$(docker image inspect -f '{{.Config.User}}' "$tag")
uid=${user%%:*}
case "$uid" in
  "" | 0 | root) fail "the image runs as root (User '${user}'): it must run as an unprivileged user" ;;
esac
case "$uid" in
  *[!0-9]*) fail "the image's User '$user' is not numeric: the host can't tell who owns the files it writes" ;;
esac
entrypoint=$(docker image inspect -f '{{json .Config.Entrypoint}}' "$tag")
[ "$entrypoint" = '["pwmpr"]' ] || fail "the entrypoint is $entrypoint, want [\"pwmpr\"]"

runs=$work/runs
mkdir -p "$runs"
run_as=()
if is_root; then
  chown "$uid" "$runs"
  want_uid=$uid
else
  run_as=(--user "$(id -u):$(id -g)")
  want_uid=$(id -u)
fi
# One container for grow, export, inspect and the bad input (docker exec): with the vfs driver every new container
# copies the whole image (measured: about 100 s each on a loaded 2-core machine). The entrypoint users call is
# checked in the image config above.
container=pwmpr-ci-$$
start_container() {
  docker run -d --name "$container" --network none "${run_as[@]}" -v "$runs:/runs" --entrypoint sleep "$tag" infinity
}
step start-container start_container
in_uid=$(docker exec "$container" id -u)
[ "$in_uid" != 0 ] || fail "the container runs as uid 0"
say "the image runs as uid $uid (User '$user'); the container as uid $in_uid; entrypoint $entrypoint"
in_container() { docker exec "$container" pwmpr "$@"; }

step grow in_container grow --data mnist5k --phase-epochs 1 --final-epochs 1 --max-phases 2 --out /runs/grow
sed 's/^/    /' "$work/grow.log"
step export in_container export /runs/grow --out /runs/export
sed 's/^/    /' "$work/export.log"
inspect_all() { in_container inspect /runs/export/model.onnx && in_container inspect /runs/export/masks.safetensors; }
step inspect inspect_all
head -n 30 "$work/inspect.log" | sed 's/^/    /'

bad_input() {
  local rc=0
  in_container grow --model no-such-model --out /runs/bad >"$work/bad.out" 2>&1 || rc=$?
  cat "$work/bad.out"
  [ "$rc" = 2 ] || { echo "exit $rc, want 2"; return 1; }
  [ "$(wc -l <"$work/bad.out")" = 1 ] || { echo "$(wc -l <"$work/bad.out") lines, want 1"; return 1; }
  grep -q '^error: ' "$work/bad.out" || { echo "the line does not start with 'error: '"; return 1; }
}
step bad-input bad_input
say "bad input: exit 2, one line: $(cat "$work/bad.out")"

check_files() {
  local f missing=0
  for f in grow/config.json grow/history.jsonl grow/summary.json grow/final.safetensors \
           export/model.safetensors export/masks.safetensors export/model.onnx export/export_report.json; do
    [ -s "$runs/$f" ] || { echo "missing or empty: $f"; missing=1; }
  done
  [ "$missing" = 0 ] || return 1
  local others
  others=$(find "$runs" -mindepth 1 ! -uid "$want_uid" -printf '%u %p\n')
  [ -z "$others" ] || { echo "not owned by uid $want_uid:"; echo "$others"; return 1; }
  echo "$(find "$runs" -mindepth 1 | wc -l) files and folders, all owned by uid $want_uid"
}
step host-files check_files
say "host side of the volume: $(tail -n 1 "$work/host-files.log")"

# --- 5. Summary ------------------------------------------------------------------------------------------------
say "summary: image $size, Docker storage $disk after the build (driver $(docker info -f '{{.Driver}}'))"
for t in "${timings[@]}"; do
  printf 'docker/ci.sh:   %-14s %8s s\n' "${t% *}" "${t##* }"
done
say "ok: the CPU image built from ./Dockerfile ran pwmpr grow, export and inspect with no network"
