// heddle-fuse-guard: removes a supervisor's mount (and its control socket) once the
// supervisor is gone. Started by the
// supervisor with one end of a socketpair; it reads until 'D' (disarmed: the supervisor
// releases the mount itself) or EOF (the supervisor died, perhaps by SIGKILL). Then it
// detaches the supervisor's mount, the one its identity names (never an fd on it, which would
// make a `umount` from outside fail with EBUSY), wherever it now is:
// umount2 when privileged, fusermount3 -u -z otherwise; and removes the control socket unless
// a new supervisor has taken the mountpoint meanwhile. Single-threaded, and in its own
// session, so neither the supervisor's death nor a terminal's signals reach it.
#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>

#include "heddle/display_text.h"
#include "heddle/launcher/control_socket.h"
#include "heddle/launcher/fuse_mount.h"
#include "heddle/launcher/mountinfo.h"
#include "heddle/launcher/user_dirs.h"

namespace {

struct GuardArgs {
  int fd = -1;
  std::string mountpoint;
  heddle::launcher::MountIdentity mount;
  std::string supervisor = "?";
};

template <typename Number>
bool parse_unsigned(std::string_view text, Number& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

bool parse_device(std::string_view text, unsigned& major, unsigned& minor) {
  const auto colon = text.find(':');
  return colon != std::string_view::npos && parse_unsigned(text.substr(0, colon), major) &&
         parse_unsigned(text.substr(colon + 1), minor);
}

bool parse(int argc, char** argv, GuardArgs& args) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    const std::string_view value = argv[i + 1];
    unsigned number = 0;
    bool ok = true;
    if (flag == "--fd") {
      ok = parse_unsigned(value, number);
      args.fd = static_cast<int>(number);
    } else if (flag == "--mountpoint") {
      args.mountpoint = value;
    } else if (flag == "--mount-id") {
      ok = parse_unsigned(value, number) && number > 0;
      args.mount.id = static_cast<int>(number);
    } else if (flag == "--mount-unique") {
      ok = parse_unsigned(value, args.mount.unique);
    } else if (flag == "--mount-dev") {
      ok = parse_device(value, args.mount.major, args.mount.minor);
    } else if (flag == "--supervisor-pid") {
      args.supervisor = value;
    } else {
      ok = false;
    }
    if (!ok) return false;
  }
  return args.fd >= 0 && !args.mountpoint.empty() && args.mount.id > 0;
}

// Escaped: the mountpoint is in most lines, and stderr may be the journal.
void say(const std::string& line) {
  std::fprintf(stderr, "heddle-fuse-guard: %s\n", heddle::escape_text(line).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  GuardArgs args;
  // Inherited from the supervisor: they say where its control socket is.
  const heddle::launcher::UserDirs dirs = heddle::launcher::UserDirs::read();
  if (!parse(argc, argv, args)) {
    std::fprintf(stderr,
                 "usage: heddle-fuse-guard --fd N --mountpoint MP --mount-id ID --mount-unique U "
                 "--mount-dev MAJ:MIN "
                 "[--supervisor-pid PID]\n(started by heddle-fuse-launcher; not meant to be run "
                 "by hand)\n");
    return 2;
  }
  ::setsid();
  ::signal(SIGPIPE, SIG_IGN);
  if (::write(args.fd, "R", 1) != 1) return 1;

  for (;;) {
    char byte = 0;
    const ssize_t n = ::read(args.fd, &byte, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the supervisor is gone
    if (byte == 'D') return 0;
  }

  // The dead supervisor's control socket would otherwise stay behind until the next mount;
  // one that a new supervisor there holds (by its lock) is not ours to remove. Its lock may
  // outlive our socket's EOF by a moment.
  try {
    (void)heddle::launcher::remove_stale_control_socket(
        heddle::launcher::control_socket_path(dirs, args.mountpoint), std::chrono::seconds(1));
  } catch (const std::exception&) {
  }
  try {
    if (!heddle::launcher::detach_mount(args.mount)) return 0;
    say("supervisor " + args.supervisor + " is gone; removed its mount at " + args.mountpoint);
    return 0;
  } catch (const std::exception& e) {
    say("supervisor " + args.supervisor + " is gone, but its mount at " + args.mountpoint +
        " could not be removed: " + e.what());
    return 1;
  }
}
