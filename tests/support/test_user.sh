#!/bin/bash
# The unprivileged half of the suite: a test user set up as on a stock distribution, and our
# binaries staged where that user can run them (the build tree may sit under a 0700 home).
#   test_user.sh setup STAGE FILE...   create the user, open /dev/fuse to it, stage FILEs
#   test_user.sh run STAGE NAME ARG... run STAGE/bin/NAME as the user
#   test_user.sh cleanup STAGE         restore /dev/fuse's mode, remove STAGE
set -euo pipefail

readonly user=heddle-test
command=$1
stage=$2
shift 2

case "$command" in
  setup)
    if ! id -u "$user" >/dev/null 2>&1; then
      useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$user"
    fi
    # A subordinate range, as useradd grants a regular user, so the worker can run as
    # neither root nor the user itself (only used where newuidmap is installed).
    if ! grep -q "^$user:" /etc/subuid 2>/dev/null; then
      usermod --add-subuids 1000000-1065535 --add-subgids 1000000-1065535 "$user"
    fi
    # A supplementary group of the user's, as a shared project directory would have: files
    # the user reads only through it (issue 18's 0640 case).
    if ! getent group "$user-share" >/dev/null; then
      groupadd --system "$user-share"
    fi
    if ! id -nG "$user" | tr ' ' '\n' | grep -qx "$user-share"; then
      usermod --append --groups "$user-share" "$user"
    fi
    rm -rf "$stage"
    mkdir -p "$stage/bin" "$stage/home"
    # Stock distributions ship /dev/fuse as 0666; this machine's is 0600.
    stat -c %a /dev/fuse >"$stage/fuse-mode"
    chmod 0666 /dev/fuse
    cp "$@" "$stage/bin/"
    # The tests' git compares with repositories root built; git refuses those otherwise, and
    # a local clone's upload-pack does not see GIT_CONFIG_* variables, only this file.
    printf '[safe]\n\tdirectory = *\n' >"$stage/home/.gitconfig"
    chmod -R a+rX "$stage"
    chown -R "$user:" "$stage/home"
    ;;
  run)
    name=$1
    shift
    cd "$stage/home"
    # Each suite logs to its own directory: a starting supervisor expires old logs in its
    # directory, and the suites run side by side.
    install -d -o "$user" -g "$user" -m 0700 "$stage/home/state/$name"
    exec setpriv --reuid="$user" --regid="$user" --init-groups \
      env -u XDG_RUNTIME_DIR HOME="$stage/home" XDG_STATE_HOME="$stage/home/state/$name" \
      HEDDLE_TEST_BIN_DIR="$stage/bin" \
      "$stage/bin/$name" "$@"
    ;;
  cleanup)
    if [[ -f "$stage/fuse-mode" ]]; then chmod "$(cat "$stage/fuse-mode")" /dev/fuse; fi
    rm -rf "$stage"
    ;;
  *)
    echo "usage: $0 setup|run|cleanup STAGE ..." >&2
    exit 2
    ;;
esac
