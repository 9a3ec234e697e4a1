// clone_with_pidfd on hosts that refuse clone3 or namespaces. Each case forks a child that
// makes its own world hostile for real (a seccomp filter, a namespace limit), clones there and
// reports what it saw over a pipe; the assertions run here, in the parent.
//
// Not covered: the retry without CLONE_NEWCGROUP when clone3 says EINVAL. clone3 takes its
// flags in memory, which seccomp cannot read, so no filter can reject that flag alone, and
// every kernel this runs on accepts it.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <initializer_list>

#include "clone3.h"
#include "heddle/error.h"
#include "heddle/launcher/launcher_environment.h"
#include "heddle/launcher/supervisor.h"
#include "heddle/sandbox/sandboxed_process.h"
#include "support/test_support.h"

namespace heddle::test {
namespace {

using namespace std::chrono_literals;
using sandbox::detail::Cloned;
using sandbox::detail::clone_with_pidfd;
using sandbox::detail::sandbox_namespace_flags;

// What the forked child saw.
struct Outcome {
  std::string fallback;             // Cloned::fallback, "" for none
  bool pidfd_reaps_clone = false;   // waitid(P_PIDFD) collected the clone's own exit status
  bool namespaces_differ = false;   // all seven of the clone's namespaces differ from ours
  int sandbox_exit = -1;            // /usr/bin/true under SandboxedProcess::launch
  int code = 0;                     // the heddle::Error thrown, if any
  std::string what;
  std::string hint;
  std::string skipped;              // why the child could not set up the case
};

// Thrown by a child that cannot set up its case on this host.
struct CannotSetUp {
  std::string why;
};

std::string serialize(const Outcome& out) {
  std::string s;
  for (const std::string& field :
       {out.fallback, std::to_string(out.pidfd_reaps_clone), std::to_string(out.namespaces_differ),
        std::to_string(out.sandbox_exit), std::to_string(out.code), out.what, out.hint,
        out.skipped}) {
    s += field;
    s += '\0';
  }
  return s;
}

Outcome deserialize(const std::string& s) {
  std::array<std::string, 8> fields;
  std::size_t start = 0;
  for (std::string& field : fields) {
    const std::size_t end = s.find('\0', start);
    if (end == std::string::npos) break;
    field = s.substr(start, end - start);
    start = end + 1;
  }
  const auto number = [](const std::string& f) { return f.empty() ? -1 : std::stoi(f); };
  return Outcome{fields[0],         number(fields[1]) == 1, number(fields[2]) == 1,
                 number(fields[3]), number(fields[4]),       fields[5],
                 fields[6],         fields[7]};
}

// Runs `body` in a forked child and returns what it recorded; an Error it throws is recorded
// too. The child never returns into gtest, and is killed if it outlives `timeout`.
template <typename Body>
Outcome in_forked_child(Body body, std::chrono::milliseconds timeout = 60s) {
  FdPair report = pipe_pair();
  // A raw fork, not a helper program: `body` (the clone under test) runs in the child.
  const pid_t child = ::fork();
  if (child < 0) throw_errno("fork");
  if (child == 0) {
    report.reader.reset();
    Outcome out;
    try {
      body(out);
    } catch (const Error& e) {
      out.code = e.code();
      out.what = e.what();
      out.hint = e.hint();
    } catch (const CannotSetUp& e) {
      out.skipped = e.why;
    } catch (const std::exception& e) {
      out.what = std::string("unexpected: ") + e.what();
    }
    const std::string bytes = serialize(out);
    const ssize_t n = ::write(report.writer.get(), bytes.data(), bytes.size());
    ::_exit(n == static_cast<ssize_t>(bytes.size()) ? 0 : 1);
  }
  report.writer.reset();
  std::string bytes;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{report.reader.get(), POLLIN, 0};
    if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) == 0) {
      ADD_FAILURE() << "the forked child did not finish within " << timeout.count() << " ms";
      ::kill(child, SIGKILL);
      break;
    }
    char buffer[4096];
    const ssize_t n = ::read(report.reader.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    bytes.append(buffer, static_cast<std::size_t>(n));
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "forked child status " << status;
  return deserialize(bytes);
}

// A seccomp rule: `syscall` fails with `error`, when its first argument has all bits of
// `arg0_bits` set (0: always).
struct Refusal {
  const char* syscall;
  int error;
  unsigned long long arg0_bits = 0;
};

// Installs a filter that allows everything but `refusals`. libseccomp sets no_new_privs first,
// which a non-root caller needs and root does not mind.
void install_filter(std::initializer_list<Refusal> refusals) {
  scmp_filter_ctx ctx = ::seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) throw std::runtime_error("seccomp_init");
  int rc = 0;
  for (const Refusal& r : refusals) {
    const int nr = ::seccomp_syscall_resolve_name(r.syscall);
    if (rc == 0) {
      rc = r.arg0_bits == 0
               ? ::seccomp_rule_add(ctx, SCMP_ACT_ERRNO(r.error), nr, 0)
               : ::seccomp_rule_add(ctx, SCMP_ACT_ERRNO(r.error), nr, 1,
                                    SCMP_A0(SCMP_CMP_MASKED_EQ, r.arg0_bits, r.arg0_bits));
    }
  }
  if (rc == 0) rc = ::seccomp_load(ctx);
  ::seccomp_release(ctx);
  if (rc != 0) throw Error("install the test's seccomp filter", -rc);
}

std::string ns_link(const std::string& pid, const char* ns) {
  std::error_code ec;
  return fs::read_symlink("/proc/" + pid + "/ns/" + ns, ec).string();
}

// Clones as the sandbox does. The clone waits until we have looked at its namespaces, then
// exits 7, which must come back through its pidfd.
void clone_and_inspect(Outcome& out) {
  FdPair gate = pipe_pair();
  Cloned cloned = clone_with_pidfd(sandbox_namespace_flags());
  if (cloned.pid == 0) {
    // Raw syscalls only, as in the sandbox's own child.
    char byte;
    ::syscall(SYS_close, gate.writer.get());
    ::syscall(SYS_read, gate.reader.get(), &byte, 1);
    ::syscall(SYS_exit_group, 7);
  }
  out.fallback = cloned.fallback != nullptr ? cloned.fallback : "";
  out.namespaces_differ = true;
  for (const char* ns : {"user", "mnt", "pid", "net", "ipc", "uts", "cgroup"}) {
    const std::string theirs = ns_link(std::to_string(cloned.pid), ns);
    out.namespaces_differ &= !theirs.empty() && theirs != ns_link("self", ns);
  }
  gate.writer.reset();
  siginfo_t info{};
  if (::waitid(P_PIDFD, static_cast<id_t>(cloned.pidfd.get()), &info, WEXITED) == 0) {
    out.pidfd_reaps_clone = info.si_pid == cloned.pid && info.si_status == 7;
  } else {
    ::kill(cloned.pid, SIGKILL);
    ::waitpid(cloned.pid, nullptr, 0);
  }
}

// The real thing: /usr/bin/true through SandboxedProcess::launch.
void launch_true(Outcome& out) {
  sandbox::SandboxSpec spec;
  spec.executable = "/usr/bin/true";
  spec.argv = {"true"};
  if (::geteuid() != 0) {
    spec.uid = ::getuid();
    spec.gid = ::getgid();
  }
  auto process = sandbox::SandboxedProcess::launch(spec);
  if (!process.wait_for_exit(30s)) process.signal(SIGKILL);
  const sandbox::ExitStatus status = process.reap();
  out.sandbox_exit = status.signaled ? 128 + status.signal : status.code;
}

void clone_then_launch(Outcome& out) {
  clone_and_inspect(out);
  launch_true(out);
}

// Only the error matters; should the clone succeed after all, it exits at once and is reaped.
void clone_expecting_failure(Outcome& out) {
  Cloned cloned = clone_with_pidfd(sandbox_namespace_flags());
  if (cloned.pid == 0) ::syscall(SYS_exit_group, 0);
  out.fallback = cloned.fallback != nullptr ? cloned.fallback : "";
  siginfo_t info{};
  ::waitid(P_PIDFD, static_cast<id_t>(cloned.pidfd.get()), &info, WEXITED);
}

void write_proc(const std::string& path, const std::string& content) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    throw_errno("write \"" + content + "\" to " + path);
  }
}

// A user namespace of our own, where we are root: its sysctls are ours to set.
void enter_user_namespace(bool as_root_inside) {
  const std::string uid = std::to_string(::geteuid());
  const std::string gid = std::to_string(::getegid());
  if (::unshare(CLONE_NEWUSER) != 0) {
    // TSan starts a thread in every forked child, and a multithreaded caller gets EINVAL.
    if (errno == EINVAL && proc_status_field(::getpid(), "Threads") != "1") {
      throw CannotSetUp{"unshare(CLONE_NEWUSER) needs a single-threaded process, and this "
                        "child has " + proc_status_field(::getpid(), "Threads") + " threads"};
    }
    throw_errno("unshare(CLONE_NEWUSER)");
  }
  write_proc("/proc/self/uid_map", (as_root_inside ? "0 " : uid + " ") + uid + " 1");
  write_proc("/proc/self/setgroups", "deny");
  write_proc("/proc/self/gid_map", (as_root_inside ? "0 " : gid + " ") + gid + " 1");
}

const std::string kAllNamespaces = "user, mount, pid, ipc, net, uts and cgroup namespaces";

class SandboxCloneTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(child_count(), 0) << "a child was left behind"; }
};

TEST_F(SandboxCloneTest, Clone3NeedsNoFallbackWhereNothingRefusesIt) {
  const Outcome out = in_forked_child(clone_then_launch);
  EXPECT_EQ(out.what, "");
  EXPECT_EQ(out.fallback, "");
  EXPECT_TRUE(out.namespaces_differ);
  EXPECT_TRUE(out.pidfd_reaps_clone);
  EXPECT_EQ(out.sandbox_exit, 0);
}

// Docker's profile answers clone3 with ENOSYS; older profiles with their default, EPERM.
class Clone3RefusedTest : public SandboxCloneTest, public ::testing::WithParamInterface<int> {};

TEST_P(Clone3RefusedTest, FallsBackToCloneWithAPidfd) {
  const int refusal = GetParam();
  const Outcome out = in_forked_child([refusal](Outcome& o) {
    install_filter({{"clone3", refusal}});
    clone_then_launch(o);
  });
  EXPECT_EQ(out.what, "");
  EXPECT_NE(out.fallback.find("clone(2) with CLONE_PIDFD"), std::string::npos) << out.fallback;
  EXPECT_TRUE(out.namespaces_differ);
  EXPECT_TRUE(out.pidfd_reaps_clone);
  EXPECT_EQ(out.sandbox_exit, 0);
}

INSTANTIATE_TEST_SUITE_P(Errno, Clone3RefusedTest, ::testing::Values(ENOSYS, EPERM),
                         [](const auto& param) { return std::string(::strerrorname_np(param.param)); });

// A clone(2) without CLONE_PIDFD (before Linux 5.2) rejects the flag with EINVAL.
TEST_F(SandboxCloneTest, CloneWithoutPidfdSupportFallsBackToPidfdOpen) {
  const Outcome out = in_forked_child([](Outcome& o) {
    install_filter({{"clone3", ENOSYS}, {"clone", EINVAL, CLONE_PIDFD}});
    clone_then_launch(o);
  });
  EXPECT_EQ(out.what, "");
  EXPECT_NE(out.fallback.find("pidfd_open"), std::string::npos) << out.fallback;
  EXPECT_EQ(out.fallback.find("cgroup"), std::string::npos) << out.fallback;
  EXPECT_TRUE(out.namespaces_differ);
  EXPECT_TRUE(out.pidfd_reaps_clone);
  EXPECT_EQ(out.sandbox_exit, 0);
}

// The Debian sysctl, or a container profile refusing namespace flags to both calls.
TEST_F(SandboxCloneTest, RefusedUserNamespacesAreEPERMNamingTheSysctlAndSeccomp) {
  const Outcome out = in_forked_child([](Outcome& o) {
    install_filter({{"clone3", EPERM}, {"clone", EPERM, CLONE_NEWUSER}});
    clone_expecting_failure(o);
  });
  EXPECT_EQ(out.code, EPERM) << out.what;
  EXPECT_EQ(out.what.rfind("clone(2) into new " + kAllNamespaces, 0), 0u) << out.what;
  EXPECT_NE(out.hint.find("kernel.unprivileged_userns_clone"), std::string::npos) << out.hint;
  EXPECT_NE(out.hint.find("sysctl -w kernel.unprivileged_userns_clone=1"), std::string::npos);
  EXPECT_NE(out.hint.find("seccomp"), std::string::npos) << out.hint;
  std::string value = slurp("/proc/sys/kernel/unprivileged_userns_clone");
  value = value.empty() ? "absent" : value.substr(0, value.find('\n'));
  EXPECT_NE(out.hint.find("(here: " + value + ")"), std::string::npos) << out.hint;
}

TEST_F(SandboxCloneTest, NoNamespacesAtAllIsENOSYSFromClone) {
  const Outcome out = in_forked_child([](Outcome& o) {
    install_filter({{"clone3", ENOSYS}, {"clone", ENOSYS, CLONE_NEWUSER}});
    clone_expecting_failure(o);
  });
  EXPECT_EQ(out.code, ENOSYS) << out.what;
  EXPECT_EQ(out.what.rfind("clone(2) into new " + kAllNamespaces, 0), 0u) << out.what;
  EXPECT_NE(out.hint.find("lacks namespaces"), std::string::npos) << out.hint;
}

// What an LSM answers; it does not send us to clone(2), which it would refuse alike.
TEST_F(SandboxCloneTest, AnLSMDenialIsEACCESNamingSELinux) {
  const Outcome out = in_forked_child([](Outcome& o) {
    install_filter({{"clone3", EACCES}});
    clone_expecting_failure(o);
  });
  EXPECT_EQ(out.code, EACCES) << out.what;
  EXPECT_EQ(out.what.rfind("clone3 into new " + kAllNamespaces, 0), 0u) << out.what;
  EXPECT_NE(out.hint.find("SELinux"), std::string::npos) << out.hint;
  if (fs::exists("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")) {
    EXPECT_NE(out.hint.find("kernel.apparmor_restrict_unprivileged_userns"), std::string::npos);
  }
}

// As bubblewrap's tests do: in a user namespace of our own, we may lower its limit to 0.
TEST_F(SandboxCloneTest, TheUserNamespaceLimitIsENOSPCNamingTheSysctl) {
  const Outcome out = in_forked_child([](Outcome& o) {
    enter_user_namespace(true);
    write_proc("/proc/sys/user/max_user_namespaces", "0");
    clone_expecting_failure(o);
  });
  if (!out.skipped.empty()) GTEST_SKIP() << out.skipped;
  EXPECT_EQ(out.code, ENOSPC) << out.what;
  EXPECT_EQ(out.what.rfind("clone3 into new " + kAllNamespaces, 0), 0u) << out.what;
  EXPECT_NE(out.hint.find("user.max_user_namespaces is 0"), std::string::npos) << out.hint;
  EXPECT_NE(out.hint.find("sysctl -w user.max_user_namespaces="), std::string::npos);
}

// Since Linux 4.9 the 32-level nesting limit answers ENOSPC too (EUSERS before).
TEST_F(SandboxCloneTest, NestingTooDeepIsENOSPCSayingSo) {
  const Outcome out = in_forked_child([](Outcome& o) {
    for (int level = 0; level < 40; ++level) {
      try {
        enter_user_namespace(false);
      } catch (const Error& e) {
        if (e.code() != ENOSPC) throw;
        break;
      }
    }
    clone_expecting_failure(o);
  });
  if (!out.skipped.empty()) GTEST_SKIP() << out.skipped;
  EXPECT_EQ(out.code, ENOSPC) << out.what;
  EXPECT_NE(out.hint.find("nest 32 levels deep"), std::string::npos) << out.hint;
}

// The launcher's side: --sandbox=strict refuses to go on and says how to opt out; a degraded
// worker then serves the mount without any namespace.
TEST_F(SandboxCloneTest, StrictRefusesWithoutUserNamespacesAndDegradedStillMounts) {
  HEDDLE_REQUIRE_MOUNT();
  if (!running_as_root()) {
    GTEST_SKIP() << "needs root: the test's seccomp filter sets no_new_privs, under which an "
                    "unprivileged mount (the setuid fusermount3) cannot happen at all";
  }
  ScratchTree tree;
  tree.write("file.txt", "degraded but served\n");
  const auto request = ipc::MountSpec::directory(tree.source().string(),
                                                 tree.mountpoint().string());
  const launcher::SupervisorOptions options = launcher::LauncherEnvironment::read().supervisor_options();
  const Outcome out = in_forked_child([&](Outcome& o) {
    // Docker's way: clone3 is ENOSYS (so glibc's threads fall back to clone), and clone(2) is
    // refused namespace flags.
    install_filter({{"clone3", ENOSYS}, {"clone", EPERM, CLONE_NEWUSER}});
    try {
      (void)launcher::Supervisor::spawn(request, options);
    } catch (const Error& e) {
      o.code = e.code();
      o.what = e.what();
      o.hint = e.hint();
    }
    ipc::MountSpec degraded = request;
    degraded.sandbox = ipc::SandboxMode::kDegraded;
    auto supervisor = launcher::Supervisor::spawn(degraded, options);
    const pid_t worker = supervisor->pid();
    const bool same_userns = ns_link(std::to_string(worker), "user") == ns_link("self", "user");
    const bool confined = proc_status_field(worker, "NoNewPrivs") == "1" &&
                          proc_status_field(worker, "Seccomp") == "2" &&
                          proc_status_field(worker, "CapEff") == "0000000000000000" &&
                          proc_status_field(worker, "CapBnd") == "0000000000000000";
    const bool served = slurp(tree.mountpoint() / "file.txt") == "degraded but served\n";
    supervisor->unmount();
    o.sandbox_exit = same_userns && confined && served && !heddle_mounted(tree.mountpoint()) ? 0 : 1;
  });
  EXPECT_EQ(out.code, EPERM) << out.what;
  EXPECT_NE(out.hint.find("kernel.unprivileged_userns_clone"), std::string::npos) << out.hint;
  EXPECT_NE(out.hint.find("--sandbox=degraded"), std::string::npos) << out.hint;
  EXPECT_EQ(out.sandbox_exit, 0) << "the degraded mount misbehaved: " << out.what;
  EXPECT_FALSE(heddle_mounted(tree.mountpoint()));
}

}  // namespace
}  // namespace heddle::test
