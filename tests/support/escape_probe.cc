// escape_probe: run inside the sandbox (heddle-fuse-launcher sandbox-exec) to try, for real,
// what a compromised worker would. One line per attempt: "ok NAME: <how it was refused>" or
// "ESCAPE NAME: <what worked>". Exits with the number of escapes (0: all refused).
//   escape_probe all HOST_PID SOURCE_DIR   every probe below
//   escape_probe read PATH                 reading PATH must fail
//   escape_probe caps                      no capability in any set, despite file caps
#include <dirent.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <linux/personality.h>
#include <linux/sched.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <system_error>
#include <thread>

namespace {

int escapes = 0;

// `attempt` returns a syscall-style result: >= 0 means it worked.
void expect_refused(const std::string& name, const std::function<long()>& attempt) {
  errno = 0;
  const long rc = attempt();
  if (rc >= 0) {
    ++escapes;
    std::printf("ESCAPE %s: succeeded (%ld)\n", name.c_str(), rc);
  } else {
    std::printf("ok %s: %s\n", name.c_str(), ::strerrorname_np(errno));
  }
}

void report(bool refused, const std::string& name, const std::string& detail) {
  if (!refused) ++escapes;
  std::printf("%s %s: %s\n", refused ? "ok" : "ESCAPE", name.c_str(), detail.c_str());
}

long open_path(const char* path, int flags, mode_t mode = 0) {
  const int fd = ::open(path, flags | O_CLOEXEC, mode);
  if (fd >= 0) ::close(fd);
  return fd;
}

std::string status_field(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) {
      const auto value = line.find_first_not_of(" \t", key.size() + 1);
      return value == std::string::npos ? "" : line.substr(value);
    }
  }
  return "";
}

void probe_capabilities() {
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    const std::string value = status_field(set);
    report(value == "0000000000000000", std::string("capabilities ") + set, value);
  }
}

void probe_files(const std::string& source) {
  for (const char* path : {"/etc/shadow", "/etc/passwd", "/root", "/home", "/dev/fuse"}) {
    expect_refused(std::string("open ") + path, [&] { return open_path(path, O_RDONLY); });
  }
  expect_refused("open /dev/fuse read-write", [] { return open_path("/dev/fuse", O_RDWR); });
  const std::string existing = source + "/visible.txt";
  const std::string created = source + "/created-by-probe";
  expect_refused("write the source", [&] { return open_path(existing.c_str(), O_WRONLY); });
  expect_refused("create in the source",
                 [&] { return open_path(created.c_str(), O_WRONLY | O_CREAT, 0644); });
  expect_refused("create a setuid file in the source", [&] {
    return open_path(created.c_str(), O_WRONLY | O_CREAT, 04755);
  });
  expect_refused("chmod u+s in the source", [&] { return ::chmod(existing.c_str(), 04755); });
  expect_refused("create a setuid file in /", [] {
    return open_path("/setuid-by-probe", O_WRONLY | O_CREAT, 04755);
  });
  expect_refused("create a file in /tmp",
                 [] { return open_path("/tmp/by-probe", O_WRONLY | O_CREAT, 0644); });
}

void probe_processes(pid_t host_pid) {
  report(::getpid() == 1, "own pid namespace", "pid " + std::to_string(::getpid()));
  // /proc is the sandbox's own: only its own processes show, never the host's pid 1.
  int pids = 0;
  if (DIR* dir = ::opendir("/proc")) {
    while (const dirent* entry = ::readdir(dir)) {
      if (std::strspn(entry->d_name, "0123456789") == std::strlen(entry->d_name)) ++pids;
    }
    ::closedir(dir);
  }
  report(pids <= 2, "list host pids", std::to_string(pids) + " pid(s) visible in /proc");
  expect_refused("kill a host process", [&] { return ::kill(host_pid, 0); });
  expect_refused("ptrace a host process",
                 [&] { return ::ptrace(PTRACE_ATTACH, host_pid, nullptr, nullptr); });
  expect_refused("read the host's /proc/1/environ through /proc",
                 [&] { return open_path(("/proc/" + std::to_string(host_pid) + "/environ").c_str(), O_RDONLY); });
}

void probe_network() {
  // Only a loopback. Counted from /proc/net/dev, which needs no socket: the filter refuses
  // sockets, so the namespace is checked on its own here.
  int interfaces = 0;
  std::ifstream dev("/proc/net/dev");
  for (std::string line; std::getline(dev, line);) {
    if (line.find(':') != std::string::npos) ++interfaces;
  }
  report(interfaces <= 1, "network interfaces", std::to_string(interfaces) + " interface(s)");
  // The worker gets its sockets ready-made: making one, of any family, is refused.
  const std::pair<const char*, int> families[] = {
      {"AF_INET", AF_INET}, {"AF_INET6", AF_INET6}, {"AF_UNIX", AF_UNIX},
      {"AF_NETLINK", AF_NETLINK}, {"AF_PACKET", AF_PACKET}};
  for (const auto& [name, family] : families) {
    expect_refused(std::string("socket ") + name, [family] {
      const int fd = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fd >= 0) ::close(fd);
      return static_cast<long>(fd);
    });
  }
  expect_refused("socketpair AF_UNIX", [] {
    int fds[2];
    const int rc = ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
    if (rc == 0) {
      ::close(fds[0]);
      ::close(fds[1]);
    }
    return static_cast<long>(rc);
  });
  // On stdout: the filter answers before the kernel would look at the fd.
  expect_refused("connect to 1.1.1.1", [] {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(53);
    ::inet_pton(AF_INET, "1.1.1.1", &to.sin_addr);
    return static_cast<long>(::connect(1, reinterpret_cast<sockaddr*>(&to), sizeof to));
  });
  expect_refused("connect to a Unix socket", [] {
    sockaddr_un to{};
    to.sun_family = AF_UNIX;
    std::strncpy(to.sun_path, "/run/systemd/private", sizeof to.sun_path - 1);
    return static_cast<long>(::connect(1, reinterpret_cast<sockaddr*>(&to), sizeof to));
  });
  expect_refused("bind", [] {
    sockaddr_un at{};
    at.sun_family = AF_UNIX;
    return static_cast<long>(::bind(1, reinterpret_cast<sockaddr*>(&at), sizeof at));
  });
  expect_refused("listen", [] { return static_cast<long>(::listen(1, 1)); });
  expect_refused("accept4", [] { return static_cast<long>(::accept4(1, nullptr, nullptr, 0)); });
}

// Issue 12, items 4 and 5: outside the allow list, and its narrowed calls in another form.
void probe_allow_list() {
  expect_refused("syscall 1000", [] { return ::syscall(1000, 0, 0, 0); });
  expect_refused("syscall 0x3fffffff", [] { return ::syscall(0x3fffffff, 0, 0, 0); });
  expect_refused("personality PER_LINUX32", [] {
    const long rc = ::syscall(SYS_personality, PER_LINUX32);
    if (rc >= 0) ::syscall(SYS_personality, rc);  // put it back
    return rc;
  });
  expect_refused("personality ADDR_NO_RANDOMIZE",
                 [] { return ::syscall(SYS_personality, static_cast<unsigned long>(ADDR_NO_RANDOMIZE)); });
  report(::syscall(SYS_personality, 0xffffffffUL) >= 0, "personality query allowed", "");
  expect_refused("ioctl TIOCSTI", [] {
    const char c = 'x';
    return static_cast<long>(::ioctl(1, TIOCSTI, &c));
  });
  expect_refused("ioctl TIOCLINUX", [] {
    char subcode = 6;  // TIOCL_GETSHIFTSTATE
    return static_cast<long>(::ioctl(1, TIOCLINUX, &subcode));
  });
  expect_refused("ioctl TIOCSCTTY", [] { return static_cast<long>(::ioctl(1, TIOCSCTTY, 1)); });
  expect_refused("prctl PR_SET_MM", [] {
    return static_cast<long>(::prctl(PR_SET_MM, PR_SET_MM_START_BRK, 0, 0, 0));
  });
  expect_refused("prctl PR_CAP_AMBIENT_RAISE", [] {
    return static_cast<long>(::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 0, 0, 0));
  });
  expect_refused("clone3", [] {
    clone_args args{};
    args.exit_signal = SIGCHLD;
    const long pid = ::syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) ::_exit(0);
    return pid;
  });
  expect_refused("memfd_secret", [] {
    const long fd = ::syscall(SYS_memfd_secret, 0);
    if (fd >= 0) ::close(static_cast<int>(fd));
    return fd;
  });
  expect_refused("add_key", [] { return ::syscall(SYS_add_key, "user", "k", "v", 1, -2); });
  // Its own session and process group: kill(0, sig) reaches nothing outside.
  report(::getsid(0) == ::getpid() && ::getpgrp() == ::getpid(), "own session",
         "sid " + std::to_string(::getsid(0)) + ", pgid " + std::to_string(::getpgrp()) +
             ", pid " + std::to_string(::getpid()));
}

void probe_syscalls() {
  expect_refused("mount", [] { return ::mount("none", "/tmp", "tmpfs", 0, nullptr); });
  expect_refused("umount", [] { return ::umount2("/usr", MNT_DETACH); });
  expect_refused("unshare user", [] { return ::unshare(CLONE_NEWUSER); });
  expect_refused("unshare mount", [] { return ::unshare(CLONE_NEWNS); });
  expect_refused("setns", [] {
    const int fd = ::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    const long rc = fd < 0 ? -1 : ::setns(fd, 0);
    if (fd >= 0) ::close(fd);
    return rc;
  });
  expect_refused("pivot_root", [] { return ::syscall(SYS_pivot_root, ".", "."); });
  expect_refused("bpf", [] {
    bpf_attr attr{};
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    return ::syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr);
  });
  expect_refused("keyctl", [] { return ::syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 1); });
  expect_refused("perf_event_open", [] {
    perf_event_attr attr{};
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    return ::syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
  });
  expect_refused("userfaultfd", [] { return ::syscall(SYS_userfaultfd, O_CLOEXEC); });
  expect_refused("kexec_load", [] { return ::syscall(SYS_kexec_load, 0, 0, nullptr, 0); });
  expect_refused("init_module", [] { return ::syscall(SYS_init_module, nullptr, 0, ""); });
  // No process at all (issue 16): a child could outlive the worker and keep its FUSE fd.
  expect_refused("fork", [] {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    return static_cast<long>(pid);
  });
  expect_refused("vfork", [] {
    const pid_t pid = ::vfork();
    if (pid == 0) ::_exit(0);
    return static_cast<long>(pid);
  });
  expect_refused("clone a process", [] {
    const long pid = ::syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, 0);
    if (pid == 0) ::_exit(0);
    return pid;
  });
  // Threads still start (not a probe of an escape: the worker needs them).
  bool started = false;
  try {
    std::thread([&] { started = true; }).join();
  } catch (const std::system_error&) {
  }
  std::printf("thread: %s\n", started ? "started" : "failed");
  expect_refused("clone into a new user namespace", [] {
    const long pid = ::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, 0);
    if (pid == 0) ::_exit(0);
    return pid;
  });
}

void probe_limits_and_fds() {
  const auto limit = [](int resource) {
    rlimit value{};
    ::getrlimit(resource, &value);
    return value;
  };
  const rlimit core = limit(RLIMIT_CORE);
  report(core.rlim_cur == 0 && core.rlim_max == 0, "RLIMIT_CORE", std::to_string(core.rlim_max));
  for (const auto& [name, resource] : {std::pair{"RLIMIT_NOFILE", RLIMIT_NOFILE},
                                       std::pair{"RLIMIT_NPROC", RLIMIT_NPROC}}) {
    const rlimit value = limit(resource);
    report(value.rlim_max != RLIM_INFINITY && value.rlim_cur == value.rlim_max, name,
           std::to_string(value.rlim_cur) + "/" + std::to_string(value.rlim_max));
  }
  std::string fds;
  int extra = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      const int fd = std::atoi(entry->d_name);
      if (fd > 2 && fd != ::dirfd(dir)) ++extra;
      fds += std::string(entry->d_name) + " ";
    }
    ::closedir(dir);
  }
  report(extra == 0, "fds beyond stdio", fds);
  report(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs", "");
  report(status_field("Seccomp") == "2", "seccomp filter", status_field("Seccomp"));
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "all" && argc == 4) {
    probe_capabilities();
    probe_files(argv[3]);
    probe_processes(static_cast<pid_t>(std::atol(argv[2])));
    probe_network();
    probe_syscalls();
    probe_allow_list();
    probe_limits_and_fds();
  } else if (mode == "read" && argc == 3) {
    expect_refused(std::string("read ") + argv[2], [&] { return open_path(argv[2], O_RDONLY); });
  } else if (mode == "caps" && argc == 2) {
    probe_capabilities();
  } else {
    std::fprintf(stderr, "usage: escape_probe all HOST_PID SOURCE | read PATH | caps\n");
    return 100;
  }
  // Without exit handlers: in a sanitizer build, LeakSanitizer's exit check needs ptrace,
  // which the sandbox refuses, and would turn every run into a failure.
  std::fflush(stdout);
  std::_Exit(escapes);
}
