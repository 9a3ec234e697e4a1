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
#include <net/if.h>
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
  // Only a loopback, and it is down.
  int interfaces = 0;
  bool lo_up = false;
  if (struct if_nameindex* names = ::if_nameindex()) {
    for (struct if_nameindex* it = names; it->if_index != 0; ++it) ++interfaces;
    ::if_freenameindex(names);
  }
  const int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock >= 0) {
    ifreq request{};
    std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
    lo_up = ::ioctl(sock, SIOCGIFFLAGS, &request) == 0 && (request.ifr_flags & IFF_UP) != 0;
  }
  report(interfaces <= 1 && !lo_up, "network interfaces",
         std::to_string(interfaces) + " interface(s), loopback " + (lo_up ? "up" : "down"));
  for (const char* address : {"1.1.1.1", "127.0.0.1"}) {
    expect_refused(std::string("connect to ") + address, [&] {
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(53);
      ::inet_pton(AF_INET, address, &to.sin_addr);
      return static_cast<long>(::connect(sock, reinterpret_cast<sockaddr*>(&to), sizeof to));
    });
  }
  if (sock >= 0) ::close(sock);
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
